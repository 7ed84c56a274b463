"""Choose the network by measurement: variants trained on one budget of updates, scored on dev.

    python -m recipes.synth.compare [--steps 400] [--dev-cuts 300] [--only NAME ...]

Every variant starts from ``recipes/synth/config.yaml`` (same data, order and seed), changes
one thing (the network, or a training setting), trains for the same number of updates (so the
same audio) with validation off, and is scored by greedy decoding on the first dev cuts. The
budget is counted in updates, not minutes, so that a busy machine cannot favour one variant;
the wall-clock speed of each is measured alongside, and the final choice weighs the two: a
slower network gets fewer updates in the same hours. One JSON line per variant is appended to
``exp/synth-compare/results.jsonl`` (variants already there are not run again, so an
interrupted comparison resumes), and the Markdown table of all of them is printed.
"""

import argparse
import json
import shutil
from pathlib import Path

from lightning.pytorch.callbacks import Timer

from asr.cli import lightning_cli
from asr.data import read_cuts
from asr.evaluation import evaluate, model_recognizer
from asr.model import save_model

CONFIG = "recipes/synth/config.yaml"
OUT = Path("exp/synth-compare")
DEV = "data/synth/cuts_dev.jsonl.gz"
# name -> command-line overrides of the config; each variant differs in one way from the
# reference (the first) or from the variant listed just before it.
REFERENCE = {
    "model.net.rnn_type": "lstm",
    "model.net.num_layers": 3,
    "model.net.hidden_size": 256,
    "model.net.subsampling": 3,
    # The settings of the first comparison; the two last variants led to the config's.
    "model.augment": "{}",  # SpecAugment with its default settings
    "model.optimizer.lr": 1e-3,
}
VARIANTS = {
    "lstm 3x256 sub3": {},
    "gru 3x256 sub3": {"model.net.rnn_type": "gru"},
    "rnn 3x256 sub3": {"model.net.rnn_type": "rnn"},
    "lstm 2x256 sub3": {"model.net.num_layers": 2},
    "lstm 3x384 sub3": {"model.net.hidden_size": 384},
    "lstm 3x256 sub2": {"model.net.subsampling": 2},
    "lstm 3x256 sub4": {"model.net.subsampling": 4},
    "lstm 3x256 sub3, no SpecAugment": {"model.augment": "null"},
    "lstm 3x256 sub3, no SpecAugment, lr 2e-3": {"model.augment": "null", "model.optimizer.lr": 2e-3},
}


def run_variant(name: str, steps: int, dev_cuts: int) -> dict:
    """Train one variant for ``steps`` updates and score it; returns its row of the table."""
    run_dir = OUT / name.replace(", ", "-").replace(" ", "-")
    shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted variant starts over (it is short)
    overrides = {**REFERENCE, **VARIANTS[name]}
    args = ["fit", "--config", CONFIG, "--trainer.default_root_dir", str(run_dir)]
    args += [f"--{key}={value}" for key, value in overrides.items()]
    args += [
        f"--trainer.max_steps={steps}",
        "--trainer.callbacks+=lightning.pytorch.callbacks.Timer",  # measures the training time
        "--trainer.callbacks.interval=step",  # a string: the enum default cannot be saved as YAML
        "--trainer.limit_val_batches=0",  # the whole budget goes to training
        "--trainer.enable_progress_bar=false",
        "--checkpoint.monitor=null",
    ]
    cli = lightning_cli(args)
    timer = next(c for c in cli.trainer.callbacks if isinstance(c, Timer))
    trained = float(cli.trainer.callback_metrics["train_audio_seconds"])
    model = cli.model.net.eval()
    save_model(model, run_dir / "model.pt")
    dev = evaluate(model_recognizer(model), read_cuts(DEV).subset(first=dev_cuts), model.config.alphabet)
    return {
        "name": name,
        **VARIANTS[name],
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "steps": cli.trainer.global_step,
        "train_hours": round(trained / 3600, 2),
        "train_speed": round(trained / timer.time_elapsed("train"), 1),
        "dev_wer": round(100 * dev.wer, 2),
        "dev_cer": round(100 * dev.cer, 2),
        "decode_speed": round(dev.speed),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | params (M) | audio trained (h) | training (x real time) | dev WER % | dev CER % "
        "| greedy decoding (x real time) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['params_m']} | {r['train_hours']} | {r['train_speed']} | {r['dev_wer']} "
            f"| {r['dev_cer']} | {r['decode_speed']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.synth.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--steps", type=int, default=400, help="training updates of every variant")
    parser.add_argument("--dev-cuts", type=int, default=300, help="dev cuts each variant is scored on")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), metavar="NAME", help="run these only")
    args = parser.parse_args(argv)
    results = OUT / "results.jsonl"
    done = {}
    if results.exists():
        done = {row["name"]: row for row in map(json.loads, results.read_text().splitlines())}
    for name in args.only or VARIANTS:
        if name in done:
            continue
        done[name] = run_variant(name, args.steps, args.dev_cuts)
        OUT.mkdir(parents=True, exist_ok=True)
        with results.open("a") as f:  # one complete line per finished variant
            f.write(json.dumps(done[name]) + "\n")
        print(table([done[name]]))
    print(table([done[n] for n in VARIANTS if n in done]))


if __name__ == "__main__":
    main()
