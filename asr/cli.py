"""The ``asr`` command.

    asr fit|validate|test|predict --config recipes/<corpus>/<config>.yaml   (LightningCLI)
    asr export CHECKPOINT MODEL
    asr transcribe FILE... --model MODEL [--format txt|json|jsonl|srt|vtt]
    asr evaluate --model MODEL MANIFEST [--output HYPS.jsonl]

Lightning is imported only for the training subcommands, so transcription starts fast.
"""

import argparse
import json
import sys
import time
from pathlib import Path

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def lightning_cli(args: list[str] | None = None):
    """LightningCLI over the training module and the data module (callable from tests)."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from asr.data import SpeechDataModule
    from asr.training import CTCTraining

    class CLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            # Checkpoints go to <default_root_dir>/checkpoints: a fixed place to resume from.
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults(
                {
                    "checkpoint.monitor": "val_wer",
                    "checkpoint.mode": "min",
                    "checkpoint.save_last": True,
                    "checkpoint.filename": "best",
                }
            )
            parser.link_arguments(
                "trainer.default_root_dir",
                "checkpoint.dirpath",
                compute_fn=lambda d: str(Path(d) / "checkpoints"),
            )
            parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir")

    return CLI(
        CTCTraining,
        SpeechDataModule,
        args=args,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "default_root_dir": "exp",
            "gradient_clip_val": 5.0,
            "use_distributed_sampler": False,  # lhotse samplers split data across ranks themselves
            "log_every_n_steps": 10,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger"},  # save_dir linked above
        },
    )


def _fail(message: str) -> None:
    print(f"asr: error: {message}", file=sys.stderr)


def _load_model(path: str):
    from asr.model import load_model

    return load_model(path)


def transcribe_command(args) -> int:
    from asr.audio import SAMPLE_RATE, AudioError, load_audio
    from asr.writers import format_results

    model = _load_model(args.model)
    loaded, failed = [], 0
    for path in args.files:
        try:
            loaded.append((path, load_audio(path)))
        except AudioError as err:
            _fail(str(err))
            failed += 1
    results = model.transcribe_batch([a for _, a in loaded], sample_rate=SAMPLE_RATE) if loaded else []
    pairs = [(path, r) for (path, _), r in zip(loaded, results, strict=True)]
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        for path, result in pairs:
            (out / f"{Path(path).stem}.{args.format}").write_text(
                format_results([(path, result)], args.format)
            )
    elif pairs:
        sys.stdout.write(format_results(pairs, args.format))
    return 1 if failed else 0


def evaluate_command(args) -> int:
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    from asr.audio import SAMPLE_RATE
    from asr.data import read_cuts
    from asr.text import normalize_text

    model = _load_model(args.model)
    cuts = read_cuts(args.manifest).resample(SAMPLE_RATE)
    output = Path(
        args.output or str(args.manifest).removesuffix(".gz").removesuffix(".jsonl") + ".hyps.jsonl"
    )
    ids, refs, hyps, seconds = [], [], [], 0.0
    started = time.perf_counter()
    for chunk in _chunks(cuts, 64):
        audio = [c.load_audio().mean(axis=0) for c in chunk]
        for cut, result in zip(chunk, model.transcribe_batch(audio, sample_rate=SAMPLE_RATE), strict=True):
            ids.append(cut.id)
            refs.append(
                normalize_text(" ".join(s.text or "" for s in cut.supervisions), model.config.alphabet)
            )
            hyps.append(result.text)
            seconds += cut.duration
    elapsed = time.perf_counter() - started
    if not ids:
        _fail(f"{args.manifest}: the manifest holds no cuts")
        return 1
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as f:
        for i, r, h in zip(ids, refs, hyps, strict=True):
            f.write(
                json.dumps({"id": i, "ref": r, "hyp": h, "wer": round(float(word_error_rate(h, r)), 4)})
                + "\n"
            )
    wer, cer = float(word_error_rate(hyps, refs)), float(char_error_rate(hyps, refs))
    print(
        f"{args.manifest}: {len(ids)} utterances, {seconds / 60:.1f} min, "
        f"WER {100 * wer:.2f} %, CER {100 * cer:.2f} %, {seconds / elapsed:.0f}x real time"
    )
    print(f"hypotheses: {output}")
    return 0


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def export_command(args) -> int:
    from asr.training import export_checkpoint

    net = export_checkpoint(args.checkpoint, args.output)
    size = Path(args.output).stat().st_size / 1e6
    print(f"{args.output}: {net.config.rnn_type} x {net.config.num_layers}, {size:.1f} MB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from asr.writers import FORMATS

    parser = argparse.ArgumentParser(prog="asr", description="Recurrent CTC speech recognition.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (see 'asr {name} --help')", add_help=False)

    p = sub.add_parser("transcribe", help="transcribe audio files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", required=True, help="model file written by 'asr export'")
    p.add_argument("--format", choices=FORMATS, default="txt")
    p.add_argument("--output-dir", help="write <name>.<format> per input here instead of stdout")
    p.set_defaults(run=transcribe_command)

    p = sub.add_parser("evaluate", help="WER/CER of a model on a cut manifest")
    p.add_argument("manifest", help="lhotse cut manifest (.jsonl or .jsonl.gz)")
    p.add_argument("--model", required=True)
    p.add_argument("--output", help="per-utterance hypotheses (JSONL); default: beside the manifest")
    p.set_defaults(run=evaluate_command)

    p = sub.add_parser("export", help="training checkpoint -> self-contained model file")
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.set_defaults(run=export_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``asr`` command; ``argv`` defaults to the command line."""
    words = sys.argv[1:] if argv is None else argv
    if words and words[0] in LIGHTNING_COMMANDS:
        lightning_cli(argv)  # None: LightningCLI reads sys.argv itself
        return 0
    args = build_parser().parse_args(words)
    from asr.model import ModelFileError

    try:
        return args.run(args)
    except (ModelFileError, FileNotFoundError, ValueError) as err:
        _fail(str(err))
        return 1


if __name__ == "__main__":
    sys.exit(main())
