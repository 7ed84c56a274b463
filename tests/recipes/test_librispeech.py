"""The LibriSpeech recipe on a tiny corpus in LibriSpeech's own layout (espeak-ng speech, 16 kHz FLAC)."""

import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
from lhotse import CutSet

from asr.cli import main as asr_main
from asr.text import normalize_text
from recipes.librispeech.prepare import main, prepare
from tests.recipes.helpers import (
    REPO,
    assert_clear_error,
    fit_one_step,
    needs_espeak,
    print_config,
    speak,
    write_tone,
)

pytestmark = needs_espeak

# part -> speaker -> chapter -> transcripts, upper case without punctuation as LibriSpeech has them
PARTS = {
    "train-clean-100": {
        "19": {"198": ["NORTHANGER ABBEY", "THE FIRST CHAPTER", "CATHERINE'S FATHER WAS A CLERGYMAN"]},
        "26": {
            "495": ["HE HOPED THERE WOULD BE STEW FOR DINNER", "TURNIPS AND CARROTS AND BRUISED POTATOES"]
        },
    },
    "dev-clean": {
        "84": {"121123": ["GO DO YOU HEAR", "BUT IN LESS THAN FIVE MINUTES THE STAIRCASE GROANED"]}
    },
    "test-clean": {
        "1089": {
            "134686": ["STUFF IT INTO YOU HIS BELLY COUNSELLED HIM", "HELLO BERTIE ANY GOOD IN YOUR MIND"]
        }
    },
    "test-other": {"1688": {"142285": ["THERE'S IRON THEY SAY IN ALL OUR BLOOD"]}},
}


def make_corpus(download: Path) -> Path:
    """``download/LibriSpeech/<part>/<speaker>/<chapter>/`` with a .trans.txt and FLACs, plus one
    transcribed clip too short for training (0.1 s) in train-clean-100."""
    for part, speakers in PARTS.items():
        for speaker, chapters in speakers.items():
            for chapter, texts in chapters.items():
                folder = download / "LibriSpeech" / part / speaker / chapter
                folder.mkdir(parents=True)
                lines = []
                for n, text in enumerate(texts):
                    utt = f"{speaker}-{chapter}-{n:04d}"
                    sf.write(folder / f"{utt}.flac", speak(text.lower()), 16000)
                    lines.append(f"{utt} {text}\n")
                (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    short = download / "LibriSpeech/train-clean-100/19/198"
    write_tone(short / "19-198-0003.flac", 0.1)
    with (short / "19-198.trans.txt").open("a") as f:
        f.write("19-198-0003 AH\n")
    return download


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    download = make_corpus(tmp_path_factory.mktemp("download"))
    out = tmp_path_factory.mktemp("data")
    return download, out, prepare(download, out, num_jobs=2)


def test_manifests_hold_the_splits_with_normalised_text(prepared, capsys):
    _, out, manifests = prepared
    assert set(manifests) == {"train", "dev", "test", "test_other"}  # no dev-other downloaded
    counts = {split: len(CutSet.from_file(path)) for split, path in manifests.items()}
    assert counts == {"train": 5, "dev": 2, "test": 2, "test_other": 1}  # the 0.1 s clip is dropped
    for path in manifests.values():
        for cut in CutSet.from_file(path):
            (segment,) = cut.supervisions
            assert segment.text == normalize_text(segment.custom["orig_text"]) != ""
            assert segment.custom["orig_text"].isupper() and segment.speaker == cut.recording_id.split("-")[0]
            assert cut.duration > 0.2 and cut.sampling_rate == 16000
            assert cut.load_audio().shape == (1, cut.num_samples)
    assert (out / "skipped.txt").read_text() == ""


def test_summary_counts_what_was_dropped(tmp_path, capsys):
    prepare(make_corpus(tmp_path / "download"), tmp_path / "data")
    out = capsys.readouterr().out
    assert "train: 5 utterances" in out and "dropped 1 shorter than 0.2 s" in out
    assert "test_other: 1 utterances" in out


def test_second_run_does_nothing(prepared, capsys):
    download, out, manifests = prepared
    before = {path: path.stat().st_mtime_ns for path in manifests.values()}
    assert prepare(download, out) == manifests
    assert {path: path.stat().st_mtime_ns for path in manifests.values()} == before
    assert "nothing to do" in capsys.readouterr().out


def test_unreadable_clip_is_reported_and_the_rest_prepared(tmp_path):
    download = make_corpus(tmp_path / "download")
    broken = download / "LibriSpeech/train-clean-100/26/495/26-495-0001.flac"
    broken.write_bytes(b"fLaC but then nothing useful")
    manifests = prepare(download / "LibriSpeech", tmp_path / "data")
    train_ids = {cut.recording_id for cut in CutSet.from_file(manifests["train"])}
    assert len(train_ids) == 4 and "26-495-0001" not in train_ids
    (line,) = (tmp_path / "data" / "skipped.txt").read_text().splitlines()
    assert line.startswith(f"{broken}\tnot a readable audio file")


def test_missing_or_misplaced_corpus_is_one_line_error(tmp_path, capsys):
    assert_clear_error(main, tmp_path / "nowhere", tmp_path / "out", capsys)
    (tmp_path / "empty" / "LibriSpeech" / "dev-clean").mkdir(parents=True)
    assert_clear_error(main, tmp_path / "empty", tmp_path / "out", capsys)
    assert not (tmp_path / "out").exists()


def test_one_training_step_with_the_recipe_config(prepared, tmp_path):
    fit_one_step("librispeech", prepared[2], tmp_path)


def test_configs_parse(capsys):
    assert "train_cuts: data/librispeech/cuts_train.jsonl.gz" in print_config(
        "librispeech", "config.yaml", capsys
    )
    gpu = print_config("librispeech", "config_gpu.yaml", capsys)
    assert "hidden_size: 800" in gpu and "precision: bf16-mixed" in gpu
    assert "save_top_k: 5" in gpu  # the five best checkpoints kept for asr average


def test_the_8_gpu_config_parses_and_dry_runs_on_two_cpu_processes(prepared, tmp_path, capsys):
    configs = [REPO / "recipes" / "librispeech" / name for name in ("config_gpu.yaml", "config_8gpu.yaml")]
    # The two layered, as the README runs them: print_config reads the first, asr fit both.
    command = ["fit", *(word for config in configs for word in ("--config", str(config)))]
    with pytest.raises(SystemExit):
        asr_main([*command, "--print_config"])
    printed = capsys.readouterr().out
    assert "devices: 8" in printed and "DDPStrategy" in printed and "timeout: 0:10:00" in printed
    assert "hidden_size: 800" in printed  # the one-GPU config's model, unchanged
    # The whole 72 M-parameter model, two updates, on two CPU processes instead of 8 GPUs.
    manifests = prepared[2]
    done = subprocess.run(
        [
            sys.executable, "-m", "asr.cli", *command,
            "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_steps", "2",
            "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path), "--model.stats_batches", "1",
            "--data.train_cuts", str(manifests["train"]), "--data.val_cuts", str(manifests["dev"]),
            "--data.test_cuts", str(manifests["test"]), "--data.num_workers", "0",
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Starting with 2 processes" in done.stdout + done.stderr
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_the_8_gpu_run_on_one_gpu_accumulates_eight_batches_an_update(capsys):
    names = ("config_gpu.yaml", "config_8gpu.yaml", "config_8gpu_on_1.yaml")
    command = [
        "fit",
        *(word for name in names for word in ("--config", str(REPO / "recipes" / "librispeech" / name))),
    ]
    with pytest.raises(SystemExit):
        asr_main([*command, "--print_config"])
    printed = capsys.readouterr().out
    assert "accumulate_grad_batches: 8" in printed and "devices: 1" in printed and "strategy: auto" in printed
    assert "lr: 0.0028" in printed and "max_duration: 800" in printed  # the 8-GPU run's settings
