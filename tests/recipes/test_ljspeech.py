"""The LJSpeech recipe on a tiny corpus in LJSpeech's own layout (espeak-ng speech, 22.05 kHz WAV)."""

from pathlib import Path

import pytest
import soundfile as sf
from lhotse import CutSet

from recipes.ljspeech.prepare import main, prepare
from tests.recipes.helpers import assert_clear_error, fit_one_step, needs_espeak, print_config, speak

pytestmark = needs_espeak

# id -> (text, normalized text): LJSpeech's second and third columns.
CLIPS = {
    "LJ001-0001": ("Printing, in the only sense with which we are at present concerned,",) * 2,
    "LJ001-0002": ("in being comparatively modern.",) * 2,
    "LJ001-0003": ("For although the Chinese took impressions from wood blocks",) * 2,
    "LJ002-0010": (
        "Mr. Neild visited the prison in 1801;",
        "Mister Neild visited the prison in eighteen oh one;",
    ),
    "LJ003-0020": (
        "The keeper's income was £300 a year.",
        "The keeper's income was three hundred pounds a year.",
    ),
    "LJ004-0030": (
        "the debtors' side was at all times crowded",
        "the debtors' side was at all times crowded",
    ),
    "LJ005-0040": ("which was handed over to the sheriffs.",) * 2,
    "LJ006-0050": ("The Chapel was occupied by Mrs. Fry", "The Chapel was occupied by Missus Fry"),
}


def make_corpus(download: Path) -> Path:
    """``download/LJSpeech-1.1/`` with metadata.csv and wavs/<id>.wav at 22050 Hz, 16-bit."""
    root = download / "LJSpeech-1.1"
    (root / "wavs").mkdir(parents=True)
    for clip_id, (_, spoken) in CLIPS.items():
        sf.write(root / "wavs" / f"{clip_id}.wav", speak(spoken, 22050), 22050, subtype="PCM_16")
    lines = "".join(f"{clip_id}|{text}|{spoken}\n" for clip_id, (text, spoken) in CLIPS.items())
    (root / "metadata.csv").write_text(lines, encoding="utf-8")
    return download


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    download = make_corpus(tmp_path_factory.mktemp("download"))
    out = tmp_path_factory.mktemp("data")
    return download, out, prepare(download, out)


def test_manifests_split_the_clips_with_spoken_text(prepared):
    _, out, manifests = prepared
    cuts = {split: CutSet.from_file(path) for split, path in manifests.items()}
    assert {split: len(c) for split, c in cuts.items()} == {"train": 6, "dev": 1, "test": 1}
    ids = [cut.recording_id for c in cuts.values() for cut in c]
    assert sorted(ids) == sorted(CLIPS)
    by_id = {cut.recording_id: cut for c in cuts.values() for cut in c}
    assert by_id["LJ002-0010"].supervisions[0].text == "mister neild visited the prison in eighteen oh one"
    assert by_id["LJ002-0010"].supervisions[0].custom["orig_text"] == "Mr. Neild visited the prison in 1801;"
    assert by_id["LJ003-0020"].supervisions[0].text == "the keeper's income was three hundred pounds a year"
    for cut in by_id.values():
        assert cut.sampling_rate == 22050 and cut.duration > 0.2
        assert cut.load_audio().shape == (1, cut.num_samples)
    assert (out / "skipped.txt").read_text() == ""


def test_split_is_reproducible_and_follows_the_seed(prepared, tmp_path):
    download, _, manifests = prepared
    test_ids = {c.id for c in CutSet.from_file(manifests["test"])}
    again = prepare(download, tmp_path / "again")
    assert {c.id for c in CutSet.from_file(again["test"])} == test_ids
    others = [prepare(download, tmp_path / f"s{seed}", seed=seed)["test"] for seed in (1, 2, 3)]
    assert any({c.id for c in CutSet.from_file(path)} != test_ids for path in others)


def test_second_run_does_nothing(prepared, capsys):
    download, out, manifests = prepared
    before = {path: path.stat().st_mtime_ns for path in manifests.values()}
    assert prepare(download / "LJSpeech-1.1", out) == manifests
    assert {path: path.stat().st_mtime_ns for path in manifests.values()} == before
    assert "nothing to do" in capsys.readouterr().out


def test_unreadable_clip_is_reported_and_the_rest_prepared(tmp_path):
    download = make_corpus(tmp_path / "download")
    broken = download / "LJSpeech-1.1" / "wavs" / "LJ004-0030.wav"
    broken.write_bytes(broken.read_bytes()[:20])  # cut inside the header
    manifests = prepare(download, tmp_path / "data")
    ids = {cut.recording_id for path in manifests.values() for cut in CutSet.from_file(path)}
    assert ids == set(CLIPS) - {"LJ004-0030"}
    (line,) = (tmp_path / "data" / "skipped.txt").read_text().splitlines()
    assert line.startswith(f"{broken}\tnot a readable audio file")


def test_missing_or_misplaced_corpus_is_one_line_error(tmp_path, capsys):
    assert_clear_error(main, tmp_path / "nowhere", tmp_path / "out", capsys)
    (tmp_path / "LJSpeech-1.1" / "wavs").mkdir(parents=True)  # no metadata.csv
    assert_clear_error(main, tmp_path, tmp_path / "out", capsys)


def test_one_training_step_with_the_recipe_config(prepared, tmp_path):
    fit_one_step("ljspeech", prepared[2], tmp_path)


def test_configs_parse(capsys):
    assert "train_cuts: data/ljspeech/cuts_train.jsonl.gz" in print_config("ljspeech", "config.yaml", capsys)
    gpu = print_config("ljspeech", "config_gpu.yaml", capsys)
    assert "hidden_size: 800" in gpu and "precision: bf16-mixed" in gpu
