"""Choose the network by measurement: variants trained on one budget of updates, scored on dev.

    python -m recipes.synth.compare [--study network|people] [--steps N] [--dev-cuts 300] [--only NAME ...]
    python -m recipes.synth.compare --study people --layer-cost   # one layer's update, timed alone

A study is a training config, a reference and its variants. Every variant starts from the
study's config (same data, order and seed), changes one thing (the network, or a training
setting), trains for the same number of updates (so the same audio) with validation off, and
is scored by greedy decoding on the first cuts of each of the study's dev sets. The budget is
counted in updates, not minutes, so that a busy machine cannot favour one variant; the
wall-clock speed of each is measured alongside, and the final choice weighs the two: a slower
network gets fewer updates in the same hours. One JSON line per variant is appended to
``exp/synth-compare/<study>/results.jsonl`` (variants already there are not run again, so an
interrupted comparison resumes), and the Markdown table of all of them is printed.

- ``network``: ``config.yaml`` (synthetic speech), the first choice of network and settings.
- ``people``: ``mix.yaml`` trained from scratch (synthetic speech and the uqm recordings),
  scored on ``dev`` and ``dev_human``: wider, projected (LSTMP) and variance-normalised
  variants of the shipped network.
"""

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch.callbacks import Timer

from asr.cli import lightning_cli
from asr.data import read_cuts
from asr.evaluation import evaluate, model_recognizer
from asr.model import save_model

OUT = Path("exp/synth-compare")


@dataclass(frozen=True)
class Study:
    config: str
    # command-line overrides of the config that every variant shares
    reference: dict
    # name -> overrides of the reference; each variant differs in one way from the reference
    # (the first) or from the variant listed just before it
    variants: dict
    dev: dict  # name -> manifest
    steps: int  # default budget in updates


STUDIES = {
    "network": Study(
        config="recipes/synth/config.yaml",
        reference={
            "model.net.rnn_type": "lstm",
            "model.net.num_layers": 3,
            "model.net.hidden_size": 256,
            "model.net.subsampling": 3,
            # The settings of the first comparison; the two last variants led to the config's.
            "model.augment": "{}",  # SpecAugment with its default settings
            "model.optimizer.lr": 1e-3,
        },
        variants={
            "lstm 3x256 sub3": {},
            "gru 3x256 sub3": {"model.net.rnn_type": "gru"},
            "rnn 3x256 sub3": {"model.net.rnn_type": "rnn"},
            "lstm 2x256 sub3": {"model.net.num_layers": 2},
            "lstm 3x384 sub3": {"model.net.hidden_size": 384},
            "lstm 3x256 sub2": {"model.net.subsampling": 2},
            "lstm 3x256 sub4": {"model.net.subsampling": 4},
            "lstm 3x256 sub3, no SpecAugment": {"model.augment": "null"},
            "lstm 3x256 sub3, no SpecAugment, lr 2e-3": {"model.augment": "null", "model.optimizer.lr": 2e-3},
        },
        dev={"dev": "data/synth/cuts_dev.jsonl.gz"},
        steps=400,
    ),
    "people": Study(
        config="recipes/synth/mix.yaml",
        reference={
            # From scratch, with the from-scratch learning rate and warm-up of config.yaml.
            "model.init_from": "null",
            "model.optimizer.lr": 2e-3,
            "model.lr_scheduler.init_args.warmup_steps": 300,
        },
        variants={
            "lstm 3x256": {},
            "lstm 3x384 (wider)": {"model.net.hidden_size": 384},
            "lstmp 3x512, projection 256": {"model.net.hidden_size": 512, "model.net.proj_size": 256},
            "lstm 3x256, utterance mean and variance": {"model.net.feature_norm": "utterance_mvn"},
        },
        dev={"dev": "data/synth/cuts_dev.jsonl.gz", "dev_human": "data/uqm/cuts_dev_human.jsonl.gz"},
        steps=1500,
    ),
}


def run_variant(study: Study, out: Path, name: str, steps: int, dev_cuts: int) -> dict:
    """Train one variant for ``steps`` updates and score it; returns its row of the table."""
    run_dir = out / name.replace(", ", "-").replace(" ", "-")
    shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted variant starts over (it is short)
    overrides = {**study.reference, **study.variants[name]}
    args = ["fit", "--config", study.config, "--trainer.default_root_dir", str(run_dir)]
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
    row = {"name": name, **study.variants[name]}
    row.update(
        params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        steps=cli.trainer.global_step,
        train_hours=round(trained / 3600, 2),
        train_speed=round(trained / timer.time_elapsed("train"), 1),
    )
    for dev_name, manifest in study.dev.items():
        dev = evaluate(
            model_recognizer(model), read_cuts(manifest).subset(first=dev_cuts), model.config.alphabet
        )
        row.update({f"{dev_name}_wer": round(100 * dev.wer, 2), f"{dev_name}_cer": round(100 * dev.cer, 2)})
        row["decode_speed"] = round(dev.speed)
    return row


def table(study: Study, rows: list[dict]) -> str:
    sets = list(study.dev)
    head = ["variant", "params (M)", "audio trained (h)", "training (x real time)"]
    head += [f"{d} {metric} %" for d in sets for metric in ("WER", "CER")]
    head.append("greedy decoding (x real time)")
    keys = ["name", "params_m", "train_hours", "train_speed"]
    keys += [f"{d}_{metric}" for d in sets for metric in ("wer", "cer")] + ["decode_speed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def layer_costs(study: Study, repeats: int = 5) -> dict[str, float]:
    """Milliseconds of one forward and backward pass of one direction of one recurrent layer
    of each variant, on 40 inputs of one second (30 ms steps) of the layer's input width,
    measured side by side in this process: the cost of an update without the data, the
    front end or the machine's other work."""
    import time

    import torch

    from asr.model import ModelConfig, RecurrentLayer

    costs = {}
    for name, changes in study.variants.items():
        net = {k.removeprefix("model.net."): v for k, v in {**study.reference, **changes}.items()}
        net = {k: v for k, v in net.items() if k in ("rnn_type", "hidden_size", "proj_size")}
        config = ModelConfig(**net)
        width = 2 * (config.proj_size or config.hidden_size)  # a deeper layer's input
        layer = RecurrentLayer(config.rnn_type, width, config.hidden_size, False, config.proj_size)
        x = torch.randn(40, round(1 / 0.03), width)
        times = []
        for _ in range(2 + repeats):  # two warm-up passes
            started = time.perf_counter()
            layer(x, torch.full((40,), x.shape[1])).sum().backward()
            times.append(time.perf_counter() - started)
        costs[name] = round(1000 * sorted(times[2:])[repeats // 2], 1)
    return costs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.synth.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--study", choices=list(STUDIES), default="network", help="which comparison")
    parser.add_argument("--steps", type=int, help="training updates of every variant (default: the study's)")
    parser.add_argument(
        "--dev-cuts", type=int, default=300, help="cuts of each dev set every variant is scored on"
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these variants only")
    parser.add_argument(
        "--layer-cost", action="store_true", help="only time one recurrent layer of each variant (ms)"
    )
    args = parser.parse_args(argv)
    study = STUDIES[args.study]
    if args.layer_cost:
        for name, ms in layer_costs(study).items():
            print(f"{name}: {ms} ms")
        return
    unknown = set(args.only or ()) - set(study.variants)
    if unknown:
        parser.error(
            f"no variant {', '.join(sorted(unknown))} in study {args.study}: {', '.join(study.variants)}"
        )
    out = OUT / args.study
    results = out / "results.jsonl"
    done = {}
    if results.exists():
        done = {row["name"]: row for row in map(json.loads, results.read_text().splitlines())}
    for name in args.only or study.variants:
        if name in done:
            continue
        done[name] = run_variant(study, out, name, args.steps or study.steps, args.dev_cuts)
        out.mkdir(parents=True, exist_ok=True)
        with results.open("a") as f:  # one complete line per finished variant
            f.write(json.dumps(done[name]) + "\n")
        print(table(study, [done[name]]))
    print(table(study, [done[n] for n in study.variants if n in done]))


if __name__ == "__main__":
    main()
