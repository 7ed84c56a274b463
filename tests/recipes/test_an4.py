"""The AN4 recipe on a tiny corpus in the layout of an4_sphere.tar.gz (espeak-ng speech, NIST SPHERE)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet

from recipes.an4.prepare import main, prepare
from tests.recipes.helpers import assert_clear_error, fit_one_step, needs_espeak, print_config, speak

pytestmark = needs_espeak

# subset -> utterance id -> words, as in an4/etc/an4_<subset>.transcription
UTTERANCES = {
    "train": {
        "an251-fash-b": "RUBOUT G M E F THREE NINE",
        "an253-fash-b": "GO",
        "cen1-fash-b": "H I N E S",
        "an36-fbbh-b": "ENTER FOUR FIVE",
        "cen4-fbbh-b": "SEVEN THIRTY",
        "an161-mgah-b": "YES",
        "cen2-mgah-b": "P I T T S B U R G H",
    },
    "test": {"an406-fcaw-b": "NO", "cen7-fcaw-b": "TWENTY TWO", "an441-mjgm-b": "ERASE T W O"},
}
FOLDERS = {"train": "an4_clstk", "test": "an4test_clstk"}


def make_corpus(download: Path) -> Path:
    """``download/an4/etc/an4_{train,test}.{transcription,fileids}`` and ``wav/<folder>/<spk>/<id>.sph``."""
    root = download / "an4"
    (root / "etc").mkdir(parents=True)
    for subset, utterances in UTTERANCES.items():
        lines, fileids = [], []
        for utt_id, words in utterances.items():
            speaker = utt_id.split("-")[1]
            sphere = root / "wav" / FOLDERS[subset] / speaker / f"{utt_id}.sph"
            sphere.parent.mkdir(parents=True, exist_ok=True)
            sf.write(sphere, speak(words.lower()), 16000, format="NIST", subtype="PCM_16")
            lines.append(f"<s> {words} </s> ({utt_id})\n")
            fileids.append(f"{FOLDERS[subset]}/{speaker}/{utt_id}\n")
        (root / "etc" / f"an4_{subset}.transcription").write_text("".join(lines))
        (root / "etc" / f"an4_{subset}.fileids").write_text("".join(fileids))
    return download


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    download = make_corpus(tmp_path_factory.mktemp("download"))
    out = tmp_path_factory.mktemp("data")
    return download, out, prepare(download, out)


def test_manifests_hold_train_dev_by_speaker_and_test(prepared):
    download, out, manifests = prepared
    cuts = {split: CutSet.from_file(path) for split, path in manifests.items()}
    speakers = {split: {c.supervisions[0].speaker for c in part} for split, part in cuts.items()}
    assert len(speakers["dev"]) == 1 and speakers["train"] | speakers["dev"] == {"fash", "fbbh", "mgah"}
    assert not speakers["train"] & speakers["dev"] and speakers["test"] == {"fcaw", "mjgm"}
    assert len(cuts["train"]) + len(cuts["dev"]) == 7 and len(cuts["test"]) == 3
    by_id = {c.recording_id: c for part in cuts.values() for c in part}
    assert by_id["an251-fash-b"].supervisions[0].text == "rubout g m e f three nine"
    assert by_id["an251-fash-b"].supervisions[0].custom["orig_text"] == "RUBOUT G M E F THREE NINE"
    for utt_id, cut in by_id.items():
        subset = "test" if utt_id in UTTERANCES["test"] else "train"
        sphere = download / "an4" / "wav" / FOLDERS[subset] / utt_id.split("-")[1] / f"{utt_id}.sph"
        audio = cut.load_audio()
        assert cut.sampling_rate == 16000 and cut.duration > 0.2 and audio.shape == (1, cut.num_samples)
        original, _ = sf.read(sphere, dtype="float32")
        np.testing.assert_array_equal(audio[0], original)  # FLAC keeps the 16-bit samples exactly
    assert (out / "skipped.txt").read_text() == ""


def test_second_run_does_nothing(prepared, capsys):
    download, out, manifests = prepared
    before = {path: path.stat().st_mtime_ns for path in [*manifests.values(), *out.glob("audio/*/*.flac")]}
    assert prepare(download / "an4", out) == manifests
    assert {path: path.stat().st_mtime_ns for path in before} == before
    assert "nothing to do" in capsys.readouterr().out


def test_unreadable_clip_and_odd_line_are_reported_and_the_rest_prepared(tmp_path):
    download = make_corpus(tmp_path / "download")
    broken = download / "an4/wav/an4test_clstk/fcaw/cen7-fcaw-b.sph"
    broken.write_bytes(b"NIST_1A\n   1024\nthis header never ends")
    transcription = download / "an4/etc/an4_train.transcription"
    transcription.write_text(transcription.read_text() + "a line without an id\n")
    manifests = prepare(download, tmp_path / "data", num_jobs=3)  # the broken clip among 3 at a time
    assert {c.recording_id for c in CutSet.from_file(manifests["test"])} == {"an406-fcaw-b", "an441-mjgm-b"}
    lines = (tmp_path / "data" / "skipped.txt").read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{transcription}:8\tnot a")
    assert lines[1].startswith(f"{broken}\tnot a readable audio file")


def test_missing_or_misplaced_corpus_is_one_line_error(tmp_path, capsys):
    assert_clear_error(main, tmp_path / "nowhere", tmp_path / "out", capsys)
    (tmp_path / "an4" / "wav" / "an4_clstk").mkdir(parents=True)  # no etc/
    assert_clear_error(main, tmp_path, tmp_path / "out", capsys)


def test_one_training_step_with_the_recipe_config(prepared, tmp_path):
    fit_one_step("an4", prepared[2], tmp_path)


def test_configs_parse(capsys):
    assert "train_cuts: data/an4/cuts_train.jsonl.gz" in print_config("an4", "config.yaml", capsys)
    gpu = print_config("an4", "config_gpu.yaml", capsys)
    assert "hidden_size: 800" in gpu and "precision: bf16-mixed" in gpu
