import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.cli import main
from asr.model import load_model

SMOKE_CONFIG = str(Path(__file__).parents[1] / "recipes" / "smoke" / "config.yaml")


def run_asr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr.cli", *args], capture_output=True, text=True)


def _fit_args(corpus, root, *extra) -> list[str]:
    return [
        "fit", "--config", SMOKE_CONFIG,
        "--data.train_cuts", corpus["train"], "--data.val_cuts", corpus["dev"],
        "--data.test_cuts", corpus["test"], "--data.num_workers", "0",
        "--model.net.hidden_size", "32", "--model.net.conv_channels", "32", "--model.stats_batches", "2",
        "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip


def test_fit_fast_dev_run_through_the_cli(corpus, tmp_path):
    main(_fit_args(corpus, tmp_path, "--trainer.fast_dev_run", "1"))


def test_print_config_shows_the_model_and_data(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", SMOKE_CONFIG, "--print_config"])
    config = capsys.readouterr().out
    assert "rnn_type: lstm" in config and "train_cuts: data/smoke/cuts_train.jsonl.gz" in config


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> dict:
    """One short epoch through `asr fit`, then `asr export`."""
    root = tmp_path_factory.mktemp("run")
    main(_fit_args(corpus, root, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"))
    checkpoint = root / "checkpoints" / "best.ckpt"
    model = root / "model.pt"
    assert main(["export", str(checkpoint), str(model)]) == 0
    return {"root": root, "checkpoint": checkpoint, "model": model}


def test_fit_writes_checkpoints_and_metrics(trained):
    assert (trained["root"] / "checkpoints" / "last.ckpt").is_file()
    assert list(trained["root"].glob("lightning_logs/version_*/metrics.csv"))


def test_exported_model_matches_the_checkpoint(trained, speech_wav):
    model = load_model(trained["model"])
    state = torch.load(trained["checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, state[f"net.{name}"])
    assert model.frontend.has_stats
    result = model.transcribe(speech_wav)
    assert result.duration == pytest.approx(sf.info(speech_wav).duration, abs=1e-3)


def test_python_api_one_liner(trained, speech_wav):
    code = "import asr, sys; print(type(asr.load_model(sys.argv[1]).transcribe(sys.argv[2]).text).__name__)"
    out = subprocess.run([sys.executable, "-c", code, str(trained["model"]), speech_wav], capture_output=True)
    assert out.stdout.decode().strip() == "str", out.stderr.decode()


def test_evaluate_prints_wer_and_writes_hypotheses(trained, corpus, tmp_path):
    out = run_asr(
        "evaluate", "--model", str(trained["model"]), corpus["test"], "--output", str(tmp_path / "h.jsonl")
    )
    assert out.returncode == 0, out.stderr
    assert "WER" in out.stdout and "CER" in out.stdout
    rows = [json.loads(line) for line in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"id", "ref", "hyp", "wer"} <= rows[0].keys()


def test_export_of_a_missing_checkpoint_fails_cleanly(tmp_path):
    out = run_asr("export", str(tmp_path / "nope.ckpt"), str(tmp_path / "m.pt"))
    assert out.returncode == 1 and "Traceback" not in out.stderr and "nope.ckpt" in out.stderr


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    files = {"missing": d / "missing.wav", "empty": d / "empty.wav", "text": d / "notes.wav"}
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not audio\n")
    files["nan"] = d / "nan.wav"
    sf.write(files["nan"], np.full(1600, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    good = d / "good.wav"
    sf.write(good, np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32), 16000)
    truncated = d / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])  # cut inside the header
    files["truncated"] = truncated
    return files


@pytest.mark.parametrize("kind", ["missing", "empty", "text", "nan", "truncated"])
def test_transcribe_bad_input_is_one_line_error(untrained_model_file, bad_inputs, kind):
    out = run_asr("transcribe", "--model", untrained_model_file, str(bad_inputs[kind]))
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and str(bad_inputs[kind]) in out.stderr


def test_transcribe_keeps_going_past_bad_files(untrained_model_file, bad_inputs, speech_wav):
    files = [str(bad_inputs["missing"]), speech_wav, str(bad_inputs["text"]), speech_wav]
    out = run_asr("transcribe", "--model", untrained_model_file, "--format", "jsonl", *files)
    assert out.returncode == 1
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["audio"] for r in rows] == [speech_wav, speech_wav]
    assert all({"text", "words", "duration"} <= r.keys() for r in rows)
    assert out.stderr.count("\n") == 2


@pytest.mark.parametrize("fmt, first_line", [("srt", None), ("vtt", "WEBVTT"), ("json", "[")])
def test_transcribe_writes_files_per_input(untrained_model_file, speech_wav, tmp_path, fmt, first_line):
    out = run_asr(
        "transcribe",
        "--model",
        untrained_model_file,
        "--format",
        fmt,
        "--output-dir",
        str(tmp_path),
        speech_wav,
    )
    assert out.returncode == 0, out.stderr
    written = (tmp_path / f"{Path(speech_wav).stem}.{fmt}").read_text()
    if first_line:
        assert written.splitlines()[0] == first_line


@pytest.mark.parametrize("content", [b"not a model", b""], ids=["text", "empty"])
def test_transcribe_with_a_file_that_is_not_a_model(tmp_path, speech_wav, content):
    model = tmp_path / "model.pt"
    model.write_bytes(content)
    out = run_asr("transcribe", "--model", str(model), speech_wav)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr and "not a model file" in out.stderr and str(model) in out.stderr


def test_transcribe_with_a_training_checkpoint_says_to_export(trained, speech_wav):
    out = run_asr("transcribe", "--model", str(trained["checkpoint"]), speech_wav)
    assert out.returncode == 1 and "asr export" in out.stderr and "Traceback" not in out.stderr
