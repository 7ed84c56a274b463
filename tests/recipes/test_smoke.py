"""The smoke recipe: espeak-ng synthesis, fortune parsing and resumable corpus preparation."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet

from asr.audio import SAMPLE_RATE
from asr.text import normalize_text
from recipes.smoke import prepare as smoke
from recipes.smoke.prepare import SPLITS, prepare, read_sentences, synthesize

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
needs_fortunes = pytest.mark.skipif(not smoke.FORTUNES.is_file(), reason="fortunes-min is not installed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny corpus shared by the tests that only read it."""
    out_dir = tmp_path_factory.mktemp("smoke")
    return out_dir, prepare(out_dir, num_train=6, num_dev=2, num_test=2)


def flac_mtimes(out_dir):
    return {path: path.stat().st_mtime_ns for path in out_dir.glob("audio/*/*.flac")}


@needs_espeak
def test_synthesize_returns_speech_at_16k():
    samples = synthesize("hello world")
    assert samples.ndim == 1 and samples.dtype == np.float32
    assert 0.3 * SAMPLE_RATE <= len(samples) <= 5 * SAMPLE_RATE
    assert np.sqrt(np.mean(samples**2)) > 0.01


@needs_espeak
def test_synthesize_reads_leading_dash_as_text():
    assert len(synthesize("-v hello")) > 0.3 * SAMPLE_RATE


@needs_espeak
def test_synthesize_unknown_voice_raises():
    with pytest.raises(RuntimeError, match="xx-nope"):
        synthesize("hello", voice="xx-nope")


def test_missing_espeak_explains_install(monkeypatch):
    monkeypatch.setattr(smoke.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        synthesize("hello")


def test_read_sentences(tmp_path):
    fortunes = tmp_path / "fortunes"
    fortunes.write_text(
        "Bank error in your favor.  Collect $200.\n%\n"
        "It's a very __\b\bUNlucky week.\n\t\t-- Churchy La Femme\n%\n"
        "Are you a turtle?  Bank error in your favor!\n%\n"
        "Too short.\n"
    )
    assert read_sentences(fortunes) == [
        "bank error in your favor",
        normalize_text("Collect $200"),
        "it's a very unlucky week",
        "are you a turtle",
    ]


def test_missing_fortunes_explains_install(tmp_path):
    with pytest.raises(RuntimeError, match="apt-get install fortunes-min"):
        read_sentences(tmp_path / "nothing")


@needs_fortunes
def test_fortunes_cover_the_default_corpus():
    assert len(read_sentences()) >= 300 + 40 + 40


@needs_espeak
@needs_fortunes
def test_prepare_writes_loadable_normalised_disjoint_splits(corpus):
    _, manifests = corpus
    assert set(manifests) == set(SPLITS)
    texts = {}
    for split, path in manifests.items():
        cuts = CutSet.from_file(path)
        assert len(cuts) == {"train": 6, "dev": 2, "test": 2}[split]
        for cut in cuts:
            audio = cut.load_audio()
            assert cut.sampling_rate == SAMPLE_RATE and cut.duration > 0
            assert audio.shape == (1, cut.num_samples) and np.abs(audio).max() > 0.01
            (supervision,) = cut.supervisions
            assert supervision.text == normalize_text(supervision.text) != ""
            assert supervision.speaker in smoke.VOICES
        texts[split] = {cut.supervisions[0].text for cut in cuts}
        assert len(texts[split]) == len(cuts)
    assert not texts["train"] & texts["dev"]
    assert not texts["train"] & texts["test"]
    assert not texts["dev"] & texts["test"]


@needs_espeak
@needs_fortunes
def test_prepare_twice_renders_nothing(corpus, capsys):
    out_dir, manifests = corpus
    before = flac_mtimes(out_dir)
    assert prepare(out_dir, num_train=6, num_dev=2, num_test=2) == manifests
    assert flac_mtimes(out_dir) == before
    assert "nothing to do" in capsys.readouterr().out


@needs_espeak
@needs_fortunes
def test_prepare_recreates_a_lost_manifest_without_rendering(corpus):
    out_dir, manifests = corpus
    before = flac_mtimes(out_dir)
    expected = [cut.to_dict() for cut in CutSet.from_file(manifests["dev"])]
    manifests["dev"].unlink()
    # What an interrupted write leaves behind: a truncated temporary manifest.
    (out_dir / ".partial-cuts_dev.jsonl.gz").write_bytes(b"\x1f\x8b truncated")
    prepare(out_dir, num_train=6, num_dev=2, num_test=2)
    assert [cut.to_dict() for cut in CutSet.from_file(manifests["dev"])] == expected
    assert flac_mtimes(out_dir) == before
    assert not list(out_dir.glob(".partial-*"))


@needs_espeak
@needs_fortunes
def test_prepare_rerenders_only_missing_clips(corpus):
    out_dir, manifests = corpus
    lost = out_dir / "audio" / "test" / "smoke-test-00001.flac"
    lost.unlink()
    manifests["test"].unlink()
    before = flac_mtimes(out_dir)
    prepare(out_dir, num_train=6, num_dev=2, num_test=2, num_jobs=1)
    after = flac_mtimes(out_dir)
    assert lost in after
    assert {path: after[path] for path in before} == before


@needs_espeak
@needs_fortunes
def test_prepare_refuses_other_settings(corpus):
    out_dir, _ = corpus
    with pytest.raises(RuntimeError, match="prepared with"):
        prepare(out_dir, num_train=7, num_dev=2, num_test=2)


@needs_fortunes
def test_main_reports_missing_espeak_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(smoke.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as exit_info:
        smoke.main(["--out", str(tmp_path), "--num-train", "1", "--num-dev", "1", "--num-test", "1"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "apt-get install espeak-ng" in err and "Traceback" not in err


@needs_espeak
@needs_fortunes
def test_a_killed_preparation_leaves_only_whole_files_and_the_rerun_completes(tmp_path):
    # `make prepare` killed at several points of its run, then run again in the same folder.
    import signal
    import subprocess
    import sys
    import time

    import soundfile as sf

    def command(out):
        counts = ["--num-train", "24", "--num-dev", "3", "--num-test", "3"]
        return [sys.executable, "-m", "recipes.smoke.prepare", "--out", str(out), *counts]

    started = time.perf_counter()
    subprocess.run(command(tmp_path / "whole"), check=True, capture_output=True)
    duration = time.perf_counter() - started
    out = tmp_path / "killed"
    for share in (0.3, 0.5, 0.7, 0.9):  # start-up, synthesis, the manifests
        process = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(share * duration)
        process.send_signal(signal.SIGKILL)
        process.wait()
        # Every clip there decodes to its declared end (a kill during a write leaves the writer's
        # hidden .partial- file, never a clip under its own name; the rerun replaces it).
        for flac in out.glob("audio/*/[!.]*.flac"):
            assert len(sf.read(flac)[0]) == sf.info(flac).frames > 0, flac
        for manifest in out.glob("cuts_*.jsonl.gz"):  # every manifest there is whole
            assert all(Path(c.recording.sources[0].source).exists() for c in CutSet.from_file(manifest))
    subprocess.run(command(out), check=True, capture_output=True)
    for split in SPLITS:
        name = f"cuts_{split}.jsonl.gz"
        killed, whole = CutSet.from_file(out / name), CutSet.from_file(tmp_path / "whole" / name)
        assert [(c.id, c.supervisions[0].text) for c in killed] == [
            (c.id, c.supervisions[0].text) for c in whole
        ]
        for cut in killed:
            assert sf.info(cut.recording.sources[0].source).frames == cut.recording.num_samples
    assert not list(out.rglob(".partial-*")), "no partial file left once the rerun completes"
