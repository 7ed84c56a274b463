"""LibriSpeech 960 h on GPUs with recipes/librispeech/config_gpu.yaml's network (5 x BiLSTM
800, 72 M parameters): an estimate from its training cost measured on this machine, scaled by
the published speed of a GPU.

    python -m benchmarks.cluster --cuts data/bench/cuts_train.jsonl.gz [--steps 12] [--batch-seconds 60]
        --json OUT

Measured here: ``asr fit`` with config_gpu.yaml (in bf16 where this CPU has it, else fp32) on
``--cuts`` for ``--steps`` updates of 60 s batches; its audio rate is what the run logs
(``train_audio_rate``: audio seconds per wall second, data loading included), the median of
the updates after the first two; and this machine's matrix-product peak in the same precision
(:func:`benchmarks.limit.matmul_rate`, a 2048 square product). The network's training work is
3 times its forward FLOPs per audio second (:func:`benchmarks.limit.flops_per_audio_second`:
the backward pass costs about twice the forward), so the run reaches a share of the peak.

Estimated: that same share of a GPU's published dense bf16 peak, per GPU, and 8 GPUs at 90 %
of 8 times one (gradient all-reduce over NVLink). A recurrent layer runs one time step after
another, each a small matrix product, which keeps a GPU further below its peak than a CPU (a
GPU's peak needs large products); so the time is more likely too short than too long: a
lower bound to plan with, not a measurement. The data loaders must keep up with the rate too:
the audio seconds per second per GPU, divided by ``data.num_workers``, is what each loader
process must decode, resample and speed-perturb.
"""

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from asr.model import ModelConfig
from benchmarks.common import write_json
from benchmarks.limit import flops_per_audio_second, matmul_rate

CONFIG = "recipes/librispeech/config_gpu.yaml"
NETWORK = ModelConfig(subsampling=3, conv_channels=512, hidden_size=800, num_layers=5)  # config_gpu.yaml's
HOURS = 960.6  # LibriSpeech's three training parts
EPOCHS = 30  # config_gpu.yaml's max_epochs
GPUS = 8
SCALING = 0.9  # share of 8 x one GPU's speed that 8 data-parallel GPUs keep (assumed)
# Dense bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets (SXM parts, no sparsity).
PUBLISHED = {"A100 (SXM)": 312.0, "H100 (SXM)": 989.0}


def measure(cuts: str, steps: int, batch_seconds: float) -> dict:
    """``asr fit`` with config_gpu.yaml for ``steps`` updates of ``batch_seconds`` on ``cuts``."""
    from asr.model import native_bf16_cpu

    bf16 = native_bf16_cpu()
    with tempfile.TemporaryDirectory() as root:
        command = [
            sys.executable, "-m", "asr.cli", "fit", "--config", CONFIG,
            "--data.train_cuts", cuts, "--data.val_cuts", cuts, "--data.test_cuts", cuts,
            "--data.max_duration", str(batch_seconds), "--data.num_workers", "2",
            "--model.stats_batches", "2",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", str(steps),
            "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--checkpoint.monitor", "null",
            "--trainer.precision", "bf16-mixed" if bf16 else "32-true", "--trainer.default_root_dir", root,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        (log,) = Path(root).glob("lightning_logs/version_*/metrics.csv")
        rates = [
            float(row["train_audio_rate"])
            for row in csv.DictReader(log.open())
            if row.get("train_audio_rate")
        ]
    dtype = torch.bfloat16 if bf16 else torch.float32
    forward = sum(flops_per_audio_second(NETWORK).values())
    rate = statistics.median(rates[2:])
    peak = matmul_rate(2048, 2048, 2048, dtype)
    share = 3 * forward * rate / peak
    gpus = {}
    for name, tflops in PUBLISHED.items():
        one = share * tflops * 1e12 / (3 * forward)
        epoch_hours = HOURS / (GPUS * SCALING * one)
        gpus[name] = {
            "audio_seconds_per_second": one,
            "epoch_hours": epoch_hours,
            "run_hours": EPOCHS * epoch_hours,
        }
    return {
        "precision": "bf16" if bf16 else "fp32",
        "batch_seconds": batch_seconds,
        "forward_flops_per_audio_second": forward,
        "rates": rates,
        "audio_seconds_per_second": rate,
        "peak_flops_per_second": peak,
        "share_of_peak": share,
        "gpus": gpus,
    }


def markdown(result: dict) -> str:
    training = 3 * result["forward_flops_per_audio_second"]
    rate, precision = result["audio_seconds_per_second"], result["precision"]
    lines = [
        f"config_gpu.yaml's network trains at {rate:.1f} audio seconds per second on this machine "
        f"({precision}, {result['batch_seconds']:g} s batches): {training * rate / 1e9:.0f} GFLOP/s of its "
        f"{training / 1e9:.1f} GFLOP per audio second, {100 * result['share_of_peak']:.0f} % of the "
        f"machine's measured {precision} peak ({result['peak_flops_per_second'] / 1e9:.0f} GFLOP/s). "
        f"The same share of a GPU's published peak, {GPUS} GPUs at {100 * SCALING:.0f} % scaling, "
        f"{HOURS:.0f} h of LibriSpeech, {EPOCHS} epochs (an estimate, and a lower bound on the time: "
        "see benchmarks/cluster.py):",
        "",
        "| GPU (published dense bf16 peak) | audio s per s, one GPU | an epoch, 8 GPUs | 30 epochs, 8 GPUs |",
        "|---|---|---|---|",
    ]
    for name, gpu in result["gpus"].items():
        lines.append(
            f"| {name} ({PUBLISHED[name]:.0f} TFLOP/s) | {gpu['audio_seconds_per_second']:,.0f} | "
            f"{60 * gpu['epoch_hours']:.1f} min | {gpu['run_hours']:.1f} h |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__.split(":")[0])
    parser.add_argument("--cuts", required=True, help="cut manifest to train on")
    parser.add_argument("--steps", type=int, default=12, help="updates to time (the first two are warm-up)")
    parser.add_argument("--batch-seconds", type=float, default=60.0, help="audio per update")
    parser.add_argument("--json", required=True, help="write the result here")
    args = parser.parse_args(argv)
    result = measure(args.cuts, args.steps, args.batch_seconds)
    write_json(result, args.json)
    print(markdown(result))


if __name__ == "__main__":
    main()
