"""Data-parallel training on Lightning's DDP: two CPU processes (gloo) on the smoke fixture,
against one process that accumulates the same two batches per update."""

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import asr.cli
from tests.test_cli import _fit_args

STEPS = 5  # of the 12 batches an epoch of the fixture has at 6 s a batch: within one epoch


def _asr(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "asr.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def _devices(devices: int) -> list[str]:
    return ["--trainer.accelerator", "cpu", "--trainer.devices", str(devices)] + (
        ["--trainer.strategy", "ddp"] if devices > 1 else []
    )


def _fit(corpus, root: Path, devices: int, steps: int, *extra: str) -> dict:
    """`asr fit` on ``devices`` processes, with every source of randomness that differs between
    processes (dropout, SpecAugment, VTLP) off; returns its last checkpoint. One length bucket:
    with several, the processes of an update all draw from one bucket (lhotse's sync_buckets,
    so that they wait less for each other), a batch order a single process does not have."""
    last = root / "checkpoints" / "last.ckpt"
    args = _fit_args(
        corpus, root, "--data.max_duration", "6", "--data.num_buckets", "1",
        "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
        "--model.augment", "null", "--model.net.dropout", "0",
        "--checkpoint.monitor", "null", "--autosave.train_time_interval", "null",
        "--autosave.every_n_train_steps", "1", "--trainer.log_every_n_steps", "1",
        *_devices(devices), *extra,
    )  # fmt: skip
    done = _asr(*args, *(["--ckpt_path", str(last)] if last.exists() else []))
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(last, map_location="cpu", weights_only=True)


def _logged(root: Path, key: str) -> list[float]:
    logs = sorted(root.glob("lightning_logs/version_*/metrics.csv"))
    return [float(row[key]) for log in logs for row in csv.DictReader(log.open()) if row.get(key)]


def _validate(corpus, checkpoint: Path, root: Path, devices: int) -> dict[str, float]:
    args = _fit_args(corpus, root, *_devices(devices))
    args[0] = "validate"
    done = _asr(*args, "--ckpt_path", str(checkpoint))
    assert done.returncode == 0, done.stderr[-3000:]
    return {key: _logged(root, key)[-1] for key in ("val_loss", "val_wer", "val_cer")}


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory) -> dict:
    """Two processes of one batch each, stopped after 3 updates and resumed to 5; one process
    with two batches an update (the same global batch), straight to 5."""
    root = tmp_path_factory.mktemp("ddp")
    two = root / "two"
    stopped = _fit(corpus, two, 2, 3, "--model.stats_batches", "2")
    shutil.copy(two / "checkpoints" / "last.ckpt", root / "stopped.ckpt")
    resumed = _fit(corpus, two, 2, STEPS, "--model.stats_batches", "2")
    one = _fit(
        corpus, root / "one", 1, STEPS, "--model.stats_batches", "4", "--trainer.accumulate_grad_batches", "2"
    )
    return {"root": root, "stopped": stopped, "resumed": resumed, "one": one}


def test_two_processes_train_resume_and_match_one_process_with_the_same_global_batch(runs):
    stopped, resumed, one = runs["stopped"], runs["resumed"], runs["one"]
    assert stopped["global_step"] == 3 and resumed["global_step"] == one["global_step"] == STEPS
    # Each process read 2 batches for the feature statistics and they were pooled: the 4 the
    # single process read, the same statistics.
    for name in ("net.frontend.mean", "net.frontend.std", "net.frontend.frames_seen"):
        torch.testing.assert_close(resumed["state_dict"][name], one["state_dict"][name])
    # The same updates: each process's gradient averaged over the two equals the accumulated
    # gradient of both batches (up to the order of float additions).
    for name, value in one["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], value, rtol=1e-4, atol=1e-5)
    assert any(
        not torch.equal(resumed["state_dict"][name], value) for name, value in stopped["state_dict"].items()
    ), "the resumed run went on training"


def test_a_run_resumes_on_another_number_of_processes(runs, corpus):
    # 3 updates of 2 processes: 6 batches of the epoch read. One process goes on with the 7th.
    root = runs["root"] / "alone"
    (root / "checkpoints").mkdir(parents=True)
    shutil.copy(runs["root"] / "stopped.ckpt", root / "checkpoints" / "last.ckpt")
    for steps, batches in ((4, 7), (5, 8)):  # and once more on one: the count stays in its turns
        state = _fit(corpus, root, 1, steps, "--model.stats_batches", "2")
        assert state["global_step"] == steps
        (sampler,) = state["loops"]["fit_loop"]["state_dict"]["combined_loader"]
        assert sampler["world_size"] == 1 and sampler["epoch"] == 0
        assert sampler["diagnostics"]["stats_per_epoch"][0]["kept_batches"] == batches


def test_throughput_is_logged_per_process_and_summed_over_them(runs):
    keys = ("train_audio_rate", "train_audio_rate_total")
    rate, total = (_logged(runs["root"] / "two", key) for key in keys)
    assert len(rate) == len(total) == STEPS  # every update (log_every_n_steps 1), resumed run included
    assert all(0 < r < t for r, t in zip(rate, total, strict=True))  # the other process's share added
    rate, total = (_logged(runs["root"] / "one", key) for key in keys)
    assert rate == total and all(r > 0 for r in rate)


def test_validation_is_scored_over_the_whole_dev_set_across_processes(runs, corpus):
    # 4 dev clips: each process scores its own share (2 each), and the scores are gathered.
    checkpoint = runs["root"] / "two" / "checkpoints" / "last.ckpt"
    both = _validate(corpus, checkpoint, runs["root"] / "val2", devices=2)
    alone = _validate(corpus, checkpoint, runs["root"] / "val1", devices=1)
    for name, value in alone.items():
        assert both[name] == pytest.approx(value, rel=1e-5), name
    # The 1-process run's model scores the same loss: the same training.
    other = _validate(corpus, runs["root"] / "one" / "checkpoints" / "last.ckpt", runs["root"] / "v", 1)
    assert other["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-3)


def test_processes_reading_shards_of_their_own_train_on_across_epochs_and_resume(corpus, tmp_path):
    """3 shards for 2 processes: one reads two of them an epoch, the other one, and the epoch
    ends for both when the second runs out (alone, the first would wait for it forever)."""
    shar = tmp_path / "shar"
    assert asr.cli.main(["data", "shard", corpus["train"], str(shar), "--shard-size", "7"]) == 0
    root = tmp_path / "run"
    stopped = _fit(corpus, root, 2, 3, "--data.train_cuts", str(shar))
    resumed = _fit(corpus, root, 2, 9, "--data.train_cuts", str(shar))
    assert stopped["global_step"] == 3 and resumed["global_step"] == 9
    assert resumed["epoch"] >= 1  # 6-7 clips of 3 s, 6 s a batch: 3-4 updates an epoch
    (loader,) = resumed["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader["processes"] == 2 and loader["world_size"] == 1  # its own part: not dealt out


def test_a_process_that_dies_stops_the_others_with_a_one_line_error(corpus, tmp_path):
    import os
    import signal
    import time

    args = _fit_args(
        corpus, tmp_path, "--data.max_duration", "6", "--trainer.max_steps", "100000",
        "--trainer.limit_val_batches", "0", "--checkpoint.monitor", "null",
        "--autosave.train_time_interval", "null", "--autosave.every_n_train_steps", "1", *_devices(2),
    )  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "asr.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        children = subprocess.run(["pgrep", "-P", str(first.pid)], capture_output=True, text=True).stdout
        (second,) = children.split()  # the process of rank 1, started by rank 0
        os.kill(int(second), signal.SIGKILL)
        _, err = first.communicate(timeout=120)  # gloo notices the closed connection at once
    finally:
        first.kill()
    assert first.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("asr: error: process 0 of the distributed run lost contact with another one"), err
    assert "Traceback" not in err


def test_more_gpus_than_the_machine_has_is_a_one_line_error(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for devices in ("2", "[0, 1]", "0,1"):
        args = _fit_args(corpus, tmp_path, "--trainer.accelerator", "gpu", "--trainer.devices", devices)
        assert asr.cli.main(args) == 1
        last, *_ = capsys.readouterr().err.splitlines()[::-1]  # after Lightning's "Seed set to 0"
        assert last.startswith("asr: error: trainer.devices ")
        assert last.endswith("(accelerator gpu): this machine has 1 CUDA device")
    for devices in (1, "1", [0], "auto"):  # what the machine has
        asr.cli.check_devices("gpu", devices)
