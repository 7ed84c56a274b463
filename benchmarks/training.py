"""Training throughput: audio seconds trained per wall second, ours against the reference.

    python -m benchmarks.training --cuts data/bench/cuts_train.jsonl.gz [--audio-seconds 600]
        [--reference-audio-seconds 300] [--repeats 3] [--only NAME ...] --json training.json

Every row trains on the same cut manifest. "asr (ours)" is our real training path: the
Lightning Trainer fitting :class:`~asr.training.CTCTraining` through ``asr fit`` with the synth
recipe's config (bf16-mixed, 120 s duration-bucketed batches, 3x subsampling, speed
perturbation); each variant after it changes one thing, so the table says what each choice
buys; the reference is :mod:`benchmarks.reference`, deepspeech.pytorch's way. A run is timed
from the end of its warm-up batches to the end of the batch that completes its audio budget
(waiting for data included); the feature statistics computed before training are not timed.
Audio seconds are those trained on: a batch's samples after speed perturbation.
Each run is a fresh process, so its peak RSS (of the training process; DataLoader workers
are processes of their own) is its own; a row gives the median of its runs.
"""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

import torch
from lightning.pytorch.callbacks import Callback
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from asr.audio import SAMPLE_RATE
from asr.model import RecurrentLayer, reverse_padded
from benchmarks.common import in_fresh_process, peak_rss_mb, write_json

CONFIG = "recipes/synth/config.yaml"
OURS = "asr (ours)"
REFERENCE = "reference (deepspeech.pytorch-style)"


@dataclass(frozen=True)
class Row:
    """One training set-up: ours with ``overrides`` (``asr fit`` arguments), or the reference."""

    name: str
    notes: str
    overrides: tuple[str, ...] = ()
    threads: int | None = None  # torch threads; None: torch's default (one per core)
    reference: bool = False


ROWS = [
    Row(
        OURS,
        "synth config: bf16-mixed, 120 s duration-bucketed batches, speed perturbation, 2 workers, "
        "padded exact RNNs",
    ),
    Row("ours, fp32", "trainer.precision 32-true instead of bf16-mixed", ("--trainer.precision=32-true",)),
    Row(
        "ours, packed sequences",
        "each RNN direction on pack_padded_sequence instead of padded tensors",
        ("--trainer.callbacks+=benchmarks.training.PackedRNNs",),
    ),
    Row(
        "ours, random batches",
        "random cuts (DynamicCutSampler) instead of length buckets; the 120 s bound is on the padded "
        "batch, so a batch holds less audio",
        ("--data.num_buckets=1",),
    ),
    Row("ours, no DataLoader workers", "audio read in the training process", ("--data.num_workers=0",)),
    Row("ours, 1 torch thread", "torch.set_num_threads(1) instead of 2", threads=1),
    Row(
        REFERENCE,
        "161-bin spectrogram, 2 x Conv2d, packed BiLSTMs, fp32, AdamW, 16 random cuts a batch, 2 workers",
        reference=True,
    ),
]


class AudioClock:
    """Times a run of batches and says when ``budget`` audio seconds have been timed.

    The clock starts at the end of the last of ``warmup`` batches (thread pools, worker
    start-up and first allocations are in those) and ends with the batch that fills the budget.
    """

    def __init__(self, budget: float, warmup: int):
        self.budget, self.warmup = budget, max(1, warmup)
        self.ends: list[float] = []
        self.audio: list[float] = []

    def tick(self, audio_seconds: float) -> bool:
        """Call at the end of every batch; True once the budget is timed."""
        self.ends.append(time.perf_counter())
        self.audio.append(audio_seconds)
        return sum(self.audio[self.warmup :]) >= self.budget

    def result(self) -> dict:
        audio = sum(self.audio[self.warmup :])
        wall = self.ends[-1] - self.ends[self.warmup - 1]
        return {
            "audio_seconds": round(audio, 1),
            "wall_seconds": round(wall, 2),
            "batches": len(self.audio) - self.warmup,
            "audio_seconds_per_second": round(audio / wall, 2),
        }


class BatchClock(Callback):
    """Feeds every training batch's audio to an :class:`AudioClock`; stops training at its budget."""

    def __init__(self, audio_seconds: float, warmup_batches: int = 2):
        self.clock = AudioClock(audio_seconds, warmup_batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.clock.tick(float(batch["audio_lens"].sum()) / SAMPLE_RATE):
            trainer.should_stop = True


def _packed(rnn: torch.nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, D) padded -> (B, T, H) through ``rnn`` on the packed sequences; padding gives zeros."""
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=x.shape[1])[0]


class PackedRecurrentLayer(RecurrentLayer):
    """:class:`~asr.model.RecurrentLayer` with the same weights run on packed sequences."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D_in) -> (B, T, H) or (B, T, 2H); zeros past each sequence's length."""
        out = _packed(self.forward_rnn, x, lengths)
        if self.backward_rnn is None:
            return out
        back = _packed(self.backward_rnn, reverse_padded(x, lengths), lengths)
        return torch.cat([out, reverse_padded(back, lengths)], dim=-1)


def pack_rnns(net: torch.nn.Module) -> None:
    """Run every RecurrentLayer of ``net`` packed (the class only changes ``forward``)."""
    for module in net.modules():
        if type(module) is RecurrentLayer:
            module.__class__ = PackedRecurrentLayer


class PackedRNNs(Callback):
    """Packs the RNNs of the model being fitted, before its first batch."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        pack_rnns(pl_module)


def train_ours(cuts: str, audio_seconds: float, warmup: int, overrides: tuple[str, ...]) -> dict:
    """Fit CTCTraining through ``asr fit`` with the synth config on ``cuts``; the clock's result."""
    from asr.cli import lightning_cli

    with tempfile.TemporaryDirectory() as run_dir:
        args = ["fit", "--config", CONFIG, f"--trainer.default_root_dir={run_dir}"]
        args += [f"--data.train_cuts={cuts}", f"--data.val_cuts={cuts}", "--trainer.limit_val_batches=0"]
        args += [
            "--trainer.callbacks+=benchmarks.training.BatchClock",
            f"--trainer.callbacks.audio_seconds={audio_seconds}",
            f"--trainer.callbacks.warmup_batches={warmup}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--checkpoint.monitor=null",  # no checkpoint is written: its time is not training's
            "--checkpoint.save_top_k=0",
            "--checkpoint.save_last=false",
            "--model.stats_batches=3",  # computed before the clock starts: fewer only saves time
            *overrides,
        ]
        cli = lightning_cli(args)
    clock = next(c for c in cli.trainer.callbacks if isinstance(c, BatchClock)).clock
    parameters = sum(p.numel() for p in cli.model.net.parameters())
    return {**clock.result(), "parameters": parameters}


def train_reference(cuts: str, audio_seconds: float, warmup: int) -> dict:
    from benchmarks.reference import train

    clock = AudioClock(audio_seconds, warmup)
    model = train(cuts, clock.tick)
    return {**clock.result(), "parameters": sum(p.numel() for p in model.parameters())}


def run_child(name: str, cuts: str, audio_seconds: float, warmup: int) -> dict:
    """One run of row ``name`` in this process: its clock's result and this process's peak RSS."""
    row = next(r for r in ROWS if r.name == name)
    if row.threads:
        torch.set_num_threads(row.threads)
    if row.reference:
        result = train_reference(cuts, audio_seconds, warmup)
    else:
        result = train_ours(cuts, audio_seconds, warmup, row.overrides)
    return {**result, "threads": torch.get_num_threads(), "peak_rss_mb": round(peak_rss_mb(), 1)}


def measure(cuts: str, audio_seconds: float, reference_seconds: float, repeats: int, warmup: int, only=None):
    """Every row (or those named in ``only``), ``repeats`` fresh runs each: the result dict."""
    rows = []
    for row in ROWS:
        if only and row.name not in only:
            continue
        budget = reference_seconds if row.reference else audio_seconds
        runs = []
        for _ in range(repeats):
            child = ["--child", row.name, "--cuts", cuts, "--audio-seconds", str(budget)]
            runs.append(in_fresh_process("benchmarks.training", *child, "--warmup-batches", str(warmup)))
            print(f"{row.name}: {runs[-1]['audio_seconds_per_second']} audio s/s", file=sys.stderr)
        rows.append(
            {
                "name": row.name,
                "audio_seconds_per_second": statistics.median(r["audio_seconds_per_second"] for r in runs),
                "runs": runs,
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                "parameters": runs[0]["parameters"],
                "notes": row.notes,
            }
        )
    speeds = {r["name"]: r["audio_seconds_per_second"] for r in rows}
    ratio = speeds[OURS] / speeds[REFERENCE] if OURS in speeds and REFERENCE in speeds else None
    settings = {
        "cuts": cuts,
        "config": CONFIG,
        "audio_seconds": audio_seconds,
        "reference_audio_seconds": reference_seconds,
        "warmup_batches": warmup,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
    }
    return {"rows": rows, "ratio_vs_reference": ratio and round(ratio, 2), "settings": settings}


def markdown(result: dict) -> str:
    """The rows as a Markdown table: speed (median of the runs), against the reference and ours."""
    speeds = {r["name"]: r["audio_seconds_per_second"] for r in result["rows"]}
    settings = result["settings"]
    lines = [
        f"Training on `{settings['cuts']}`, median of {settings['repeats']} runs of "
        f"{settings['audio_seconds']:g} audio seconds each (the reference: "
        f"{settings['reference_audio_seconds']:g}), after {settings['warmup_batches']} warm-up batches.",
        "",
        "| training | parameters | audio s per wall s | x vs reference | x vs ours | peak RSS MB "
        "| what differs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        speed = row["audio_seconds_per_second"]
        ratios = [f"{speed / speeds[base]:.2f}" if base in speeds else "-" for base in (REFERENCE, OURS)]
        lines.append(
            f"| {row['name']} | {row['parameters'] / 1e6:.2f} M | {speed:.1f} | {ratios[0]} | {ratios[1]} "
            f"| {row['peak_rss_mb']:.0f} | {row['notes']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.training", description=__doc__.split("\n")[0])
    parser.add_argument("--cuts", required=True, help="training cut manifest (.jsonl[.gz])")
    parser.add_argument("--audio-seconds", type=float, default=600, help="timed audio of each run of ours")
    parser.add_argument(
        "--reference-audio-seconds", type=float, help="timed audio of each reference run (default: half)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="fresh runs of each row; the median is kept")
    parser.add_argument("--warmup-batches", type=int, default=2, help="untimed batches at the start of a run")
    parser.add_argument(
        "--only", nargs="+", choices=[r.name for r in ROWS], metavar="NAME", help="these rows"
    )
    parser.add_argument("--json", "--out", required=True, help="JSON file to write")
    parser.add_argument("--child", choices=[r.name for r in ROWS], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        write_json(run_child(args.child, args.cuts, args.audio_seconds, args.warmup_batches), args.json)
        return
    reference_seconds = args.reference_audio_seconds or args.audio_seconds / 2
    result = measure(
        args.cuts, args.audio_seconds, reference_seconds, args.repeats, args.warmup_batches, args.only
    )
    write_json(result, args.json)
    print(markdown(result))


if __name__ == "__main__":
    # The package's module, not __main__: the CLI builds the callbacks from their class path,
    # and run_child must find them as instances of the same classes.
    from benchmarks.training import main as package_main

    package_main()
