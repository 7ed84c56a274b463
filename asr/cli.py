"""The ``asr`` command.

    asr fit|validate|test|predict --config recipes/<corpus>/<config>.yaml   (LightningCLI)
    asr export CHECKPOINT MODEL [--format pt|onnx]
    asr average CHECKPOINT... -o MODEL   (the mean of a run's last checkpoints)
    asr data shard MANIFEST OUT_DIR [--shard-size 1000]   (cuts and their audio as Shar shards)
    asr transcribe FILE... [--model MODEL] [--format txt|json|jsonl|srt|vtt|tsv]
    asr stream FILE|-|--mic [--model streaming] [--chunk-ms 200] [--pause 0.8]   (live text, final at pauses)
    asr serve [--model MODEL] [--host 127.0.0.1] [--port 8000] [--workers 1]   (HTTP, WebSocket, web page)
    asr evaluate [--model MODEL] MANIFEST... [--compare pocketsphinx] [--output-dir DIR] [--report DIR]
    asr plot CLIP [--model MODEL] -o OUT.png | asr plot --metrics RUN/lightning_logs/version_N -o OUT.png
    asr lm build TEXT... [--order 3] [--exclude HELD_OUT...] --out LM.arpa[.gz]   (word n-gram, Kneser-Ney)
    asr lm tune DEV_MANIFEST... [--lm LM] [--charlm LM] [--model MODEL] [--save]   (LM weights grid)
    asr lm fit|validate|test --config recipes/<corpus>/charlm.yaml   (character RNN LM)
    asr lm export CKPT OUT | sample [--model LM] [--prompt P] | perplexity [--model LM | --lm LM] TEXT...

Lightning is imported only for the training subcommands, so transcription starts fast.
"""

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import NoReturn

from asr.progress import progress

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# `asr lm build --exclude`: shorter held-out sentences ("thank you", "goodbye captain") are
# everyday phrases; leaving out every line that holds one would cut the LM, not a leak.
EXCLUDE_MIN_WORDS = 3
EXPORT_FORMATS = ("pt", "onnx")


def lightning_cli(args: list[str] | None = None, language_model: bool = False):
    """LightningCLI over the recognizer's (or, with ``language_model``, the character LM's)
    training and data modules; callable from tests."""
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from asr.data import SpeechDataModule, TextDataModule
    from asr.training import AudioThroughput, CharLMTraining, CTCTraining, RandomState, TopCheckpoints

    class CLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            # Checkpoints go to <default_root_dir>/checkpoints: a fixed place to resume from.
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults(
                {
                    "checkpoint.monitor": "val_loss" if language_model else "val_wer",
                    "checkpoint.mode": "min",
                    "checkpoint.save_last": True,
                    "checkpoint.filename": "best",
                    # Always best.ckpt (never best-v1.ckpt): `asr export` and the Makefile read it,
                    # and a fresh run never starts in a folder that holds another (before_fit).
                    "checkpoint.enable_version_counter": False,
                }
            )
            # last.ckpt also every 10 minutes of training, mid-epoch included: a killed run
            # loses at most that (``make train`` resumes it where it stopped).
            parser.add_lightning_class_args(ModelCheckpoint, "autosave")
            parser.set_defaults(
                {
                    "autosave.monitor": None,
                    "autosave.save_top_k": 0,
                    "autosave.save_last": True,
                    "autosave.train_time_interval": timedelta(minutes=10),
                    "autosave.enable_version_counter": False,
                }
            )
            # The N best by the same measure, for `asr average`: --top.save_top_k 5. None by default.
            parser.add_lightning_class_args(TopCheckpoints, "top")
            parser.set_defaults(
                {
                    "top.monitor": "val_loss" if language_model else "val_wer",
                    "top.mode": "min",
                    "top.save_top_k": 0,
                    "top.filename": "top-{step}",
                    "top.enable_version_counter": False,
                }
            )
            for group in ("checkpoint", "autosave", "top"):
                parser.link_arguments(
                    "trainer.default_root_dir",
                    f"{group}.dirpath",
                    compute_fn=lambda d: str(Path(d) / "checkpoints"),
                )
            parser.link_arguments("trainer.default_root_dir", "trainer.logger.init_args.save_dir")

        def before_fit(self):
            config = self.config[self.subcommand]
            folder = Path(config.checkpoint.dirpath)
            if config.ckpt_path is None and any(folder.glob("*.ckpt")):
                raise ValueError(
                    f"{folder} holds the checkpoints of an earlier run: resume it with --ckpt_path "
                    f"{folder / 'last.ckpt'}, or start a new run in another --trainer.default_root_dir"
                )

        def before_instantiate_classes(self):
            config = self.config[self.subcommand] if self.subcommand else self.config
            trainer = config.trainer
            trainer.precision = training_precision(trainer.precision, trainer.accelerator)
            check_devices(trainer.accelerator, trainer.devices)
            # --ckpt_path is read with torch.load(weights_only=True): a checkpoint holds tensors
            # and plain values, never code to run (asr.training allows its config classes).
            if config.get("weights_only") is None and "weights_only" in config:
                config.weights_only = True

    return CLI(
        CharLMTraining if language_model else CTCTraining,
        TextDataModule if language_model else SpeechDataModule,
        args=args,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "default_root_dir": "exp",
            "gradient_clip_val": 5.0,
            "use_distributed_sampler": False,  # lhotse samplers split data across ranks themselves
            "log_every_n_steps": 10,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger"},  # save_dir linked above
            "plugins": [
                {"class_path": "asr.training.AtomicCheckpointIO"}
            ],  # a class path: kept in config.yaml
            "callbacks": [RandomState(), *([] if language_model else [AudioThroughput()])],
        },
    )


def training_precision(precision, accelerator) -> str:
    """The trainer's ``precision``, unless it asks for bf16 on a CPU that has none: there bf16
    is emulated, and an update took 22x as long as in fp32 (AVX2, no AVX-512); fp32 instead."""
    import torch

    from asr import model

    on_cpu = accelerator == "cpu" or (
        accelerator == "auto" and not (torch.cuda.is_available() or torch.backends.mps.is_available())
    )
    if not (on_cpu and str(precision).startswith("bf16")) or model.native_bf16_cpu():
        return precision
    print(
        f"asr: warning: trainer.precision {precision} asks for bf16, which this CPU does not have "
        "(AVX-512 or Arm BF16): training in fp32 (32-true) instead",
        file=sys.stderr,
    )
    return "32-true"


def check_devices(accelerator, devices) -> None:
    """A one-line error when the trainer asks for more GPUs than this machine has (Lightning's
    own is a traceback, or no error until the processes start)."""
    import torch

    if accelerator not in ("gpu", "cuda") and not (accelerator == "auto" and torch.cuda.is_available()):
        return  # CPU processes: as many as asked, whatever the cores
    available = torch.cuda.device_count()
    if isinstance(devices, str) and devices != "auto":
        devices = [int(d) for d in devices.split(",") if d.strip()] if "," in devices else int(devices)
    if devices == "auto" or devices == -1:
        wanted, highest = max(available, 1), -1
    elif isinstance(devices, int):
        wanted, highest = devices, -1
    else:  # a list of device indices
        wanted, highest = len(devices), max(devices, default=-1)
    if wanted > available or highest >= available:
        raise ValueError(
            f"trainer.devices {devices} (accelerator {accelerator}): this machine has {available} CUDA "
            f"device{'s' * (available != 1)}"
        )


def _fail(message: str) -> None:
    print(f"asr: error: {message}", file=sys.stderr)


def is_input_error(err: BaseException) -> bool:
    """Whether ``err`` reports a problem with what the user gave (a one-line message), rather
    than a bug (which keeps its traceback): the project's own checks raise ValueError and
    FileNotFoundError with a message naming the file and the problem, so an error of those
    types counts as the user's when it was raised in the project's own code. The same type
    raised inside torch or numpy (a shape error, say) is a bug."""
    from json import JSONDecodeError

    from asr.model import ModelFileError

    if isinstance(err, ModelFileError | JSONDecodeError):  # a JSON error is always the file's
        return True
    if not isinstance(err, ValueError | FileNotFoundError):
        return False
    frame = err.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    package = Path(__file__).resolve().parent
    return frame is not None and Path(frame.tb_frame.f_code.co_filename).resolve().is_relative_to(package)


def lost_peer(err: BaseException) -> bool:
    """Whether ``err`` is a collective operation of a distributed run failing because another
    process stopped (gloo notices a closed connection at once) or stopped answering (NCCL
    waits for the strategy's timeout, then raises)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not isinstance(err, RuntimeError):
        return False
    return isinstance(err, getattr(dist, "DistError", ())) or "/gloo/" in str(err)


def _load_model(args):
    from asr.model import load_model

    return load_model(args.model, device=args.device, precision=getattr(args, "precision", "fp32"))


def transcribe_command(args) -> int:
    from asr.audio import AudioError
    from asr.files import write_atomically
    from asr.inference import transcribe_files
    from asr.writers import format_results

    if not args.output_dir and args.format in ("srt", "vtt") and len(args.files) > 1:
        raise ValueError(f"{args.format} holds the subtitles of one input; give one file or --output-dir")
    targets = output_paths(args.files, args.output_dir, args.format) if args.output_dir else {}
    model = _load_model(args)
    options = _decoding_options(args, model)
    pairs, failed = [], 0
    results = transcribe_files(model, args.files, options)  # a group of files at a time
    for path, result in progress(results, args.quiet, total=len(args.files), unit="file", leave=False):
        if isinstance(result, AudioError):
            _fail(str(result))
            failed += 1
        elif targets:
            text = format_results([(path, result)], args.format)
            targets[path].parent.mkdir(parents=True, exist_ok=True)
            write_atomically(targets[path], lambda partial, text=text: partial.write_text(text))
        else:
            pairs.append((path, result))
    if pairs:
        sys.stdout.write(format_results(pairs, args.format))
    return 1 if failed else 0


def output_paths(files: list[str], out_dir: str, fmt: str) -> dict[str, Path]:
    """Where ``asr transcribe --output-dir`` writes each input's transcript: the inputs' folders
    below their common folder are kept (``a/clip.wav``, ``b/clip.wav`` -> ``OUT/a/clip.txt``,
    ``OUT/b/clip.txt``); two inputs that would still share a name are refused before any work."""
    parents = [Path(f).resolve().parent for f in files]
    root = Path(os.path.commonpath(parents))
    targets, source = {}, {}
    for file, parent in zip(files, parents, strict=True):
        target = Path(out_dir) / parent.relative_to(root) / f"{Path(file).stem}.{fmt}"
        if target in source:
            raise ValueError(f"{source[target]} and {file} would both be written to {target}")
        targets[file], source[target] = target, file
    return targets


def stream_command(args) -> int:
    from asr.audio import SAMPLE_RATE, load_audio
    from asr.streaming import microphone, open_stream, read_pcm

    if (args.file is None) != args.mic:
        raise ValueError("give one source: a FILE, - for raw audio on stdin, or --mic")
    if args.chunk_ms <= 0 or args.pause < 0:
        raise ValueError(
            f"--chunk-ms must be positive and --pause not negative, got {args.chunk_ms}, {args.pause}"
        )
    seconds = args.chunk_ms / 1000
    model = _load_model(args)
    options = _decoding_options(args, model)
    if args.mic:
        rate, chunks = microphone(seconds)
    elif args.file == "-":
        rate = args.sample_rate
        chunks = read_pcm(sys.stdin.buffer, args.encoding, max(1, round(seconds * rate)))
    else:
        audio, rate = load_audio(args.file), SAMPLE_RATE
        step = max(1, round(seconds * rate))
        chunks = (audio[start : start + step] for start in range(0, len(audio), step))
    stream = open_stream(model, rate, options, pause=args.pause or None)
    text = _LiveText(sys.stdout)
    started = time.perf_counter()
    try:
        for chunk in chunks:
            result = stream.feed(chunk)
            if args.realtime and args.file not in (None, "-"):  # at the pace of speech, as a live source
                time.sleep(max(0.0, result.duration - (time.perf_counter() - started)))
            text.show(stream, result)
    except KeyboardInterrupt:  # the way to end a microphone's stream: its text so far is final
        pass
    text.show(stream, stream.finish())
    return 0


class _LiveText:
    """A stream's text on ``out``: each stretch that became final on a line of its own
    (``final: ...``), the partial text of the current one updated in place on a terminal,
    elsewhere one line per change (``[seconds heard] ...``)."""

    def __init__(self, out):
        self.out, self.tty = out, out.isatty()
        self.printed = 0  # final words printed
        self.partial = ""

    def show(self, stream, result) -> None:
        done = len(stream.committed)
        if done > self.printed:
            self._line(f"final: {' '.join(w.text for w in result.words[self.printed : done])}", keep=True)
            self.printed, self.partial = done, ""
        partial = " ".join(w.text for w in result.words[done:])
        if partial != self.partial:
            self._line(f"[{result.duration:7.2f} s] {partial}", keep=not self.tty)
            self.partial = partial

    def _line(self, text: str, keep: bool) -> None:
        if self.tty:  # rewrite the line of the partial text
            text = "\r\x1b[K" + text
        self.out.write(text + ("\n" if keep else ""))
        self.out.flush()


def serve_command(args) -> int:
    from asr.serve import serve

    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    if args.batch_seconds < 0:
        raise ValueError(f"--batch-seconds must not be negative, got {args.batch_seconds}")
    model = _load_model(args)
    name = Path(args.model).stem if args.model else "default"
    settings = {
        "workers": args.workers,
        "max_upload_mb": args.max_upload_mb,
        "batch_seconds": args.batch_seconds,
    }
    serve(model, name, args.host, args.port, options=_decoding_options(args, model), **settings)
    return 0


def evaluate_command(args) -> int:
    from asr.data import read_cuts
    from asr.evaluation import RECOGNIZERS, evaluate, model_recognizer, table

    if args.report:
        from asr.report import check_report_folder

        check_report_folder(args.report, args.output_dir)  # before the work, not after it
    model = _load_model(args)
    decoders = [_decoding_options(args, model, method) for method in dict.fromkeys(args.decoder or [None])]
    ours = {f"asr {options.name}": options for options in decoders}
    recognizers = {name: model_recognizer(model, options) for name, options in ours.items()}
    recognizers.update({name: RECOGNIZERS[name]() for name in args.compare})
    rows, failed, sets = [], 0, {}
    for manifest in args.manifests:
        cuts = read_cuts(manifest)
        name = Path(manifest).name.removesuffix(".gz").removesuffix(".jsonl").removeprefix("cuts_")
        sets[name] = cuts
        total = sum(1 for _ in cuts)  # a lazy manifest: one quick pass over its lines
        for k, (recognizer, recognize) in enumerate(recognizers.items()):
            bar = progress(
                None, args.quiet, total=total, desc=f"{name}, {recognizer}", unit="utt", leave=False
            )
            with bar:
                result = evaluate(recognize, cuts, model.config.alphabet, done=bar.update)
            if k == 0:  # a manifest's unreadable cuts are named once, not per recognizer
                failed += len(result.failed)
                for cut_id, problem in result.failed:
                    _fail(f"{manifest}: cut {cut_id}: {problem}")
            if not result.ids:
                _fail(
                    f"{manifest}: "
                    + ("none of its cuts could be read" if result.failed else "the manifest holds no cuts")
                )
                return 1
            print(f"{manifest} ({recognizer}): {result.summary()}", file=sys.stderr)
            if args.show:
                print(result.listing(), end="")
            suffix = f".{recognizer.removeprefix('asr ').replace(' + ', '+').replace(' ', '')}"
            stem = str(manifest).removesuffix(".gz").removesuffix(".jsonl")
            default = f"{stem}{suffix}.hyps.jsonl"
            output = Path(args.output_dir) / Path(default).name if args.output_dir else Path(default)
            result.write(output)
            rows.append((name, recognizer, result))
    print(table(rows))
    if args.report:
        from asr.report import write_report

        title = f"asr evaluate: {args.model or 'the default model'}"
        print(f"report: {write_report(args.report, rows, model, ours, sets, title)}", file=sys.stderr)
    return 1 if failed else 0


def plot_command(args) -> int:
    from asr import plots

    if (args.clip is None) == (args.metrics is None):
        raise ValueError("give a CLIP to draw, or --metrics DIR for a training run's curves (one of them)")
    if args.metrics:
        print(plots.plot_metrics(args.metrics, args.output))
        return 0
    model = _load_model(args)
    print(plots.plot_clip(model, args.clip, args.output, _decoding_options(args, model)))
    return 0


def export_format(output: str, format: str | None) -> str:
    """The format of ``asr export``'s OUTPUT: load_model tells an ONNX graph by its ``.onnx``
    suffix, so the suffix and ``--format`` must agree."""
    onnx = Path(output).suffix == ".onnx"
    if format is None:
        return "onnx" if onnx else "pt"
    if onnx != (format == "onnx"):
        wanted = "a name ending in .onnx" if format == "onnx" else "a name not ending in .onnx"
        raise ValueError(f"{output}: --format {format} needs {wanted} (load_model tells ONNX by the suffix)")
    return format


def export_command(args) -> int:
    from asr.checkpoints import export_charlm, export_checkpoint

    if args.language_model:
        net = export_charlm(args.checkpoint, args.output)
    else:
        args.format = export_format(args.output, args.format)
        net = export_checkpoint(args.checkpoint, args.output, args.format)
    kind = "character LM, " if args.language_model else f"{args.format}, "
    size = Path(args.output).stat().st_size / 1e6
    print(f"{args.output}: {kind}{net.config.rnn_type} x {net.config.num_layers}, {size:.1f} MB")
    return 0


def average_command(args) -> int:
    from asr.checkpoints import average, export

    args.format = export_format(args.output, args.format)
    net = export(average(args.checkpoints), args.checkpoints[-1], args.output, args.format)
    size = Path(args.output).stat().st_size / 1e6
    print(f"{args.output}: the mean of {len(args.checkpoints)} networks, {net.config.rnn_type} x "
          f"{net.config.num_layers}, {size:.1f} MB")  # fmt: skip
    return 0


def data_shard_command(args) -> int:
    from asr.manifests import write_shar

    options = {"overwrite": args.overwrite, "seed": args.seed, "quiet": args.quiet}
    if args.shard_size is not None:
        options["shard_size"] = args.shard_size
    done = write_shar(args.manifest, args.out_dir, **options)
    hours = done.seconds / 3600
    print(f"{args.out_dir}: {done.cuts} cuts in {done.shards} shards, {hours:.2f} hours of audio")
    return 0


def lm_build_command(args) -> int:
    from asr.ngram import arpa_sizes, build_arpa, without_sentences
    from asr.text import normalize_text, read_text_file

    if args.order < 1:
        raise ValueError(f"--order must be at least 1, got {args.order}")
    started = time.perf_counter()
    files = [read_text_file(path) for path in args.texts]  # every file checked before counting
    lines = progress((line for file in files for line in file), args.quiet, desc="counting", unit=" lines")
    if args.exclude:
        held_out = [normalize_text(s) for path in args.exclude for s in read_text_file(path) if s.strip()]
        kept = without_sentences((normalize_text(line) for line in lines), held_out, EXCLUDE_MIN_WORDS)
        print(f"--exclude: {len(kept)} lines kept; none holds a sentence of {', '.join(args.exclude)}")
        lines = kept
    path = build_arpa(lines, args.out, args.order, min_count=args.min_count)
    sizes = arpa_sizes(path)
    per_order = ", ".join(f"{size} {n}-grams" for n, size in enumerate(sizes, start=1))
    print(f"{path}: {per_order}, {time.perf_counter() - started:.1f} s")
    return 0


def lm_tune_command(args) -> int:
    from dataclasses import replace

    from lhotse import CutSet

    from asr.data import read_cuts
    from asr.decoding import DecodingOptions, beam_defaults, write_beam_defaults
    from asr.evaluation import tune_beam

    if args.save and not args.model:
        raise ValueError("--save stores the beam search beside a model: name it with --model")
    model = _load_model(args)
    # The first N cuts of each manifest, scored together.
    parts = [read_cuts(m).subset(first=args.first) if args.first else read_cuts(m) for m in args.manifests]
    cuts = CutSet.from_cuts(cut for part in parts for cut in part)
    if not (args.lm or args.charlm):
        raise ValueError("nothing to tune: give a word n-gram (--lm), a character LM (--charlm) or both")
    base = DecodingOptions(
        method="beam", beam_size=args.beam_size, beam_size_token=args.beam_size_token,
        beam_threshold=args.beam_threshold, lm=args.lm, charlm=args.charlm, rescore_nbest=args.rescore_nbest,
    )  # fmt: skip
    if args.save:
        beam_defaults(args.model, base)  # the LMs sit beside the model: checked before the grid runs
    # A weight without its LM changes nothing: it keeps its default, and the grid stays small.
    lm_weights = args.lm_weights if args.lm else [base.lm_weight]
    charlm_weights = args.charlm_weights if args.charlm else [base.charlm_weight]
    grid = [
        replace(base, lm_weight=w, word_score=s, charlm_weight=c)
        for w in lm_weights for s in args.word_scores for c in charlm_weights
    ]  # fmt: skip
    print("| LM weight | word score | char LM weight | WER % | CER % | search speed (x real time) |")
    print("|---|---|---|---|---|---|")
    best = None
    for options, result in progress(tune_beam(model, cuts, grid), args.quiet, total=len(grid), leave=False):
        scores = f"{100 * result.wer:.2f} | {100 * result.cer:.2f} | {result.speed:.0f}"
        lm_weight = options.lm_weight if args.lm else "-"  # the weight of an LM not given does nothing
        charlm_weight = options.charlm_weight if args.charlm else "-"
        print(f"| {lm_weight} | {options.word_score} | {charlm_weight} | {scores} |", flush=True)
        if best is None or (result.wer, result.cer) < (best[1].wer, best[1].cer):
            best = options, result
    options, result = best
    flags = f"--word-score {options.word_score}"
    flags = (f"--lm-weight {options.lm_weight} " if args.lm else "") + flags
    flags += f" --charlm-weight {options.charlm_weight}" if args.charlm else ""
    sets = ", ".join(args.manifests)
    print(f"best: {flags} (WER {100 * result.wer:.2f} %, {len(result.ids)} utterances of {sets})")
    if args.save:
        path = write_beam_defaults(args.model, options)
        print(f"{path}: 'asr transcribe' now decodes with this LM and these weights with this model")
    return 0


def lm_sample_command(args) -> int:
    from asr.charlm import DEFAULT_CHARLM, load_charlm, sample

    model = load_charlm(args.model or DEFAULT_CHARLM)
    for i in range(args.n):
        seed = None if args.seed is None else args.seed + i
        print(sample(model, args.prompt, args.temperature, args.max_chars, seed))
    return 0


def lm_perplexity_command(args) -> int:
    from asr.text import read_text_file

    if args.lm:
        from asr.ngram import ArpaModel, word_perplexity

        model = ArpaModel(args.lm)
    else:
        from asr.charlm import DEFAULT_CHARLM, load_charlm, perplexity

        model = load_charlm(args.model or DEFAULT_CHARLM)
    for path in args.texts:
        sentences = [line.strip() for line in read_text_file(path) if line.strip()]
        if not sentences:
            raise ValueError(f"{path}: no sentences, only blank lines")
        if not args.lm:
            print(
                f"{path}: perplexity {perplexity(model, sentences):.3f} per character, "
                f"{len(sentences)} sentences"
            )
            continue
        r = word_perplexity(model, sentences)
        print(
            f"{path}: perplexity {r['perplexity']:.1f} per word "
            f"({r['perplexity_known']:.1f} over known words), "
            f"{r['oov']} of {r['words']} words out of the vocabulary ({100 * r['oov_rate']:.2f} %), "
            f"{r['sentences']} sentences"
        )
    return 0


def _lm_parser(sub) -> None:
    from asr.decoding import DecodingOptions

    lm = sub.add_parser("lm", help="language models: word n-gram and character RNN")
    lm_sub = lm.add_subparsers(dest="lm_command", required=True, metavar="LM_COMMAND")
    for name in ("fit", "validate", "test"):
        lm_sub.add_parser(name, help=f"LightningCLI {name} of a character LM", add_help=False)

    p = lm_sub.add_parser("build", help="word n-gram LM (modified Kneser-Ney) -> ARPA file")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (none is shown unless stderr is a terminal)"
    )
    p.add_argument("texts", nargs="+", metavar="TEXT", help="text file, one sentence per line")
    p.add_argument("--order", type=int, default=3, help="n-gram order (default: 3)")
    p.add_argument("--min-count", type=int, default=1,
                   help="leave out n-grams of the highest order seen fewer times (default: 1)")  # fmt: skip
    p.add_argument("--out", default="lm.arpa", help="ARPA file to write (default: lm.arpa)")
    p.add_argument("--exclude", nargs="+", metavar="SENTENCES",
                   help=f"files of held-out sentences: lines holding one of {EXCLUDE_MIN_WORDS} or more "
                   "words are left out")  # fmt: skip
    p.set_defaults(run=lm_build_command)

    p = lm_sub.add_parser("tune", help="grid search of n-gram LM weight and word score on a dev manifest")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (none is shown unless stderr is a terminal)"
    )
    p.add_argument(
        "manifests", nargs="+", metavar="MANIFEST", help="lhotse cut manifests (.jsonl[.gz]), e.g. dev"
    )
    p.add_argument("--lm", help="word n-gram LM (ARPA, from 'asr lm build')")
    p.add_argument("--charlm", help="character RNN LM file (from 'asr lm export')")
    p.add_argument("--model", help="model file (default: asr/models/default.pt)")
    p.add_argument("--lm-weights", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    p.add_argument("--word-scores", type=float, nargs="+", default=[-3.0, -2.0, -1.0, 0.0])
    p.add_argument("--charlm-weights", type=float, nargs="+", default=[0.1, 0.3, 0.5, 1.0])
    p.add_argument("--rescore-nbest", type=int, default=DecodingOptions().rescore_nbest,
                   help="with both LMs: n-gram hypotheses the character LM rescores")  # fmt: skip
    p.add_argument("--beam-size", type=int, default=32)
    p.add_argument("--beam-size-token", type=int, help="tokens tried at each frame (default: all)")
    p.add_argument("--beam-threshold", type=float, default=25.0)
    p.add_argument("--first", type=int, help="tune on the first N cuts of each manifest only")
    p.add_argument(
        "--save",
        action="store_true",
        help="store the best as the --model's beam search (<model>.decoding.json)",
    )
    _add_runtime_arguments(p, precision=False)
    p.set_defaults(run=lm_tune_command)

    p = lm_sub.add_parser("export", help="character LM training checkpoint -> LM file")
    p.add_argument("checkpoint")
    p.add_argument("output")
    p.set_defaults(run=export_command, language_model=True)

    p = lm_sub.add_parser("sample", help="sentences generated by a character LM")
    p.add_argument(
        "--model", help="LM file written by 'asr lm export' (default: asr/models/default.charlm.pt)"
    )
    p.add_argument("--prompt", default="", help="text each sample starts with")
    p.add_argument("--temperature", type=float, default=1.0, help="<1 safer, >1 wilder, 0 greedy")
    p.add_argument("-n", type=int, default=1, help="number of samples")
    p.add_argument("--max-chars", type=int, default=200, help="characters added per sample, at most")
    p.add_argument("--seed", type=int, help="reproducible samples (sample i uses seed + i)")
    p.set_defaults(run=lm_sample_command)

    p = lm_sub.add_parser(
        "perplexity",
        help="perplexity of a character LM (per character) or word n-gram LM (per word, with the "
        "out-of-vocabulary rate) on text files",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        help="character LM file written by 'asr lm export' (default: asr/models/default.charlm.pt)",
    )
    which.add_argument("--lm", help="word n-gram LM (ARPA, .gz too)")
    p.add_argument("texts", nargs="+", metavar="TEXT", help="text file, one sentence per line")
    p.set_defaults(run=lm_perplexity_command)


def _add_decoding_arguments(p: argparse.ArgumentParser, several: bool = False) -> None:
    from asr.decoding import DecodingOptions

    default = DecodingOptions()
    g = p.add_argument_group(
        "decoding (see asr.decoding.DecodingOptions); beam search without --lm uses the model's tuned LM"
    )
    tuned = "default: the model's tuned beam search and LM (<model>.decoding.json) if it has one, else greedy"
    if several:
        g.add_argument("--decoder", choices=["greedy", "beam"], nargs="+", help=f"a row each; {tuned}")
    else:
        g.add_argument("--decoder", choices=["greedy", "beam"], help=tuned)
    g.add_argument("--beam-size", type=int, help=f"default: {default.beam_size}")
    g.add_argument("--beam-size-token", type=int, help="tokens tried at each frame (default: all)")
    g.add_argument("--beam-threshold", type=float, help=f"default: {default.beam_threshold}")
    g.add_argument("--lm", help="word n-gram LM (ARPA, from 'asr lm build'); words kept to its vocabulary")
    g.add_argument("--lexicon", help="allowed words (flashlight lexicon); default with --lm: the LM's words")
    g.add_argument("--charlm", help="character RNN LM file (from 'asr lm export')")
    g.add_argument("--no-lm", action="store_true", help="beam search without the model's tuned LM")
    g.add_argument("--lm-weight", type=float, help=f"default: the model's tuned one, or {default.lm_weight}")
    g.add_argument(
        "--word-score", type=float, help=f"default: the model's tuned one, or {default.word_score}"
    )
    g.add_argument(
        "--charlm-weight", type=float, help=f"default: the model's tuned one, or {default.charlm_weight}"
    )
    g.add_argument(
        "--rescore-nbest", type=int, help=f"with both LMs: hypotheses to rescore ({default.rescore_nbest})"
    )
    g.add_argument(
        "--hotwords", nargs="+", metavar="PHRASE[:BOOST]",
        help=f"words or phrases to favour, each word scoring BOOST more when the whole phrase is said "
        f"(default {HOTWORD_BOOST}); words the LM lacks become possible (beam search with an LM)",
    )  # fmt: skip


def _decoding_options(args, model, method: str | None = None):
    """The options given on the command line (with ``method`` for ``args.decoder``), over the
    model's tuned beam search when beam decoding (asked for, or the model's default) comes
    without an LM of its own."""
    from dataclasses import replace

    from asr.decoding import DecodingOptions
    from asr.inference import default_options

    # An LM given without a decoder asks for the beam search that uses it.
    lm_given = args.lm or args.charlm or args.lexicon
    method = method or args.decoder or ("beam" if lm_given else default_options(model).method)
    base = DecodingOptions(method=method)
    if method == "beam" and model.beam_options and not (lm_given or args.no_lm):
        base = model.beam_options
    given = {
        "beam_size": args.beam_size, "beam_size_token": args.beam_size_token,
        "beam_threshold": args.beam_threshold, "lm": args.lm,
        "lexicon": args.lexicon, "charlm": args.charlm, "lm_weight": args.lm_weight,
        "word_score": args.word_score, "charlm_weight": args.charlm_weight,
        "rescore_nbest": args.rescore_nbest,
        "hotwords": args.hotwords and tuple(_hotword(spec) for spec in args.hotwords),
    }  # fmt: skip
    return replace(base, **{key: value for key, value in given.items() if value is not None})


HOTWORD_BOOST = 2.0  # a hotword's boost when --hotwords gives none (chosen on dev_human)


def _hotword(spec: str) -> tuple[str, float]:
    """``PHRASE[:BOOST]`` -> (phrase, boost)."""
    phrase, colon, boost = spec.rpartition(":")
    if not colon:
        return spec, HOTWORD_BOOST
    try:
        return phrase, float(boost)
    except ValueError:
        raise ValueError(f"--hotwords {spec!r}: the boost after ':' must be a number") from None


def _add_runtime_arguments(p: argparse.ArgumentParser, precision: bool = True) -> None:
    from asr.model import PRECISIONS

    p.add_argument("--device", default="auto",
                   help="cpu, cuda, cuda:N, or auto (default: a GPU when there is one)")  # fmt: skip
    if precision:
        p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                       help="bf16: for GPUs and CPUs with native bf16 (avx512_bf16, AMX)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from asr.writers import FORMATS

    parser = argparse.ArgumentParser(prog="asr", description="Recurrent CTC speech recognition.")
    parser.add_argument(
        "--debug", action="store_true",
        help="show the traceback of every error (also: ASR_DEBUG=1); by default an error in the "
        "input is one line",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (see 'asr {name} --help')", add_help=False)

    p = sub.add_parser("transcribe", help="transcribe audio files")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (none is shown unless stderr is a terminal)"
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", help="model file written by 'asr export' (default: asr/models/default.pt)")
    p.add_argument("--format", choices=FORMATS, default="txt")
    p.add_argument("--output-dir", help="write <name>.<format> per input here instead of stdout")
    _add_runtime_arguments(p)
    _add_decoding_arguments(p)
    p.set_defaults(run=transcribe_command)

    p = sub.add_parser(
        "stream",
        help="recognize audio as it comes (a file, raw audio on stdin, the microphone), "
        "printing the text as it grows",
    )
    p.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="an audio file, or - for raw mono audio on stdin (--sample-rate, --encoding)",
    )
    p.add_argument(
        "--mic", action="store_true", help="the default microphone (pip install 'asr[mic]'); Ctrl-C ends"
    )
    p.add_argument(
        "--model",
        help="model file or shipped model name (default: the shipped default); a unidirectional one "
        "(--model streaming) streams exactly, others re-decode a window of the latest audio",
    )
    p.add_argument("--chunk-ms", type=float, default=200.0, help="audio per chunk (default: 200 ms)")
    p.add_argument(
        "--pause", type=float, default=0.8,
        help="seconds without speech after which the text so far becomes final, decoded with the "
        "final options (default: 0.8; 0: only at the end); a bidirectional model's window stream "
        "makes words final as its window moves instead",
    )  # fmt: skip
    p.add_argument(
        "--sample-rate", type=int, default=16000, help="rate of raw audio on stdin (default: 16000)"
    )
    p.add_argument(
        "--encoding", choices=("pcm16", "f32"), default="pcm16",
        help="samples of raw audio on stdin: 16-bit little-endian PCM or float32 (default: pcm16)",
    )  # fmt: skip
    p.add_argument(
        "--realtime", action="store_true", help="feed a file's chunks at the pace of speech, as a live source"
    )
    _add_runtime_arguments(p, precision=False)
    _add_decoding_arguments(p)
    p.set_defaults(run=stream_command)

    p = sub.add_parser("serve", help="HTTP service (OpenAI-compatible) and web page for a model")
    p.add_argument("--model", help="model file (default: asr/models/default.pt)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers", type=int, default=1,
        help="threads transcribing at once (default 1: on a CPU one batch already uses every core)",
    )  # fmt: skip
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload accepted (default 100)")
    p.add_argument(
        "--batch-seconds", type=float, default=240.0,
        help="most audio of the requests waiting together transcribed as one batch (0: one at a time)",
    )  # fmt: skip
    _add_runtime_arguments(p)
    _add_decoding_arguments(p)
    p.set_defaults(run=serve_command)

    p = sub.add_parser("evaluate", help="WER/CER of a model on cut manifests, as a Markdown table")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (none is shown unless stderr is a terminal)"
    )
    p.add_argument("manifests", nargs="+", metavar="MANIFEST", help="lhotse cut manifest (.jsonl[.gz])")
    p.add_argument("--model", help="model file (default: asr/models/default.pt)")
    p.add_argument(
        "--compare", nargs="+", default=[], choices=["pocketsphinx"], help="also score these recognizers"
    )
    p.add_argument(
        "--output-dir", help="write <manifest>.<recognizer>.hyps.jsonl here; default: beside each manifest"
    )
    p.add_argument(
        "--show", action="store_true", help="also print every utterance's reference and hypothesis"
    )
    p.add_argument(
        "--report", metavar="DIR",
        help="also write DIR/index.html: the table, a WER chart, the worst utterances with word diffs "
        "and pictures (DIR is replaced as a whole)",
    )  # fmt: skip
    _add_runtime_arguments(p)
    _add_decoding_arguments(p, several=True)
    p.set_defaults(run=evaluate_command)

    p = sub.add_parser("export", help="training checkpoint (or model file) -> self-contained model file")
    p.add_argument("checkpoint", help="a training checkpoint, or a model file to convert")
    p.add_argument("output")
    p.add_argument(
        "--format", choices=EXPORT_FORMATS,
        help="pt: model file for torch; onnx: a graph for ONNX Runtime (load_model reads both, telling "
        "them by the suffix); default: onnx for OUTPUT.onnx, else pt",
    )  # fmt: skip
    p.set_defaults(run=export_command, language_model=False)

    p = sub.add_parser("average", help="the mean of several checkpoints of one run -> model file")
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="training checkpoints or model files")
    p.add_argument("-o", "--output", required=True, help="model file to write (.pt, or .onnx)")
    p.add_argument("--format", choices=EXPORT_FORMATS, help="default: onnx for OUTPUT.onnx, else pt")
    p.set_defaults(run=average_command)

    p = sub.add_parser("plot", help="pictures: a clip as the model sees it, or a training run's curves")
    p.add_argument(
        "clip", nargs="?", metavar="CLIP",
        help="audio file: waveform, the model's log-mel frames, CTC posteriors, word boxes",
    )  # fmt: skip
    p.add_argument(
        "--metrics", metavar="DIR",
        help="a run's lightning_logs/version_N (metrics.csv): loss, WER and CER against step",
    )  # fmt: skip
    p.add_argument("-o", "--output", required=True, help="picture to write: .png (or .svg, .pdf)")
    p.add_argument("--model", help="model file (default: asr/models/default.pt)")
    _add_runtime_arguments(p, precision=False)
    _add_decoding_arguments(p)
    p.set_defaults(run=plot_command)
    _lm_parser(sub)
    _data_parser(sub)
    return parser


def _data_parser(sub) -> None:
    data = sub.add_parser("data", help="training data: manifests as Shar shards")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    p = data_sub.add_parser(
        "shard", help="a cut manifest and its audio as lhotse Shar shards, read by training a shard at a time"
    )
    p.add_argument("manifest", metavar="MANIFEST", help="lhotse cut manifest (.jsonl[.gz])")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write the shards to")
    # No default here: asr.manifests.SHARD_SIZE (importing lhotse would slow every command's start).
    p.add_argument("--shard-size", type=int, help="cuts per shard (default: 1000)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists (once complete)")
    p.add_argument("--seed", type=int, default=0, help="of the random order the cuts are written in")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (none is shown unless stderr is a terminal)"
    )
    p.set_defaults(run=data_shard_command)


def _exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown, which takes 0.5 s once torch is
    loaded: a quarter of a short clip's ``asr transcribe``. Its output is flushed first, and it
    leaves no worker process, thread or open file behind (its files are written atomically)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``asr`` command; ``argv`` defaults to the command line."""
    words = sys.argv[1:] if argv is None else argv
    debug = bool(os.environ.get("ASR_DEBUG"))
    try:
        if words and words[0] in LIGHTNING_COMMANDS:
            lightning_cli(argv)  # None: LightningCLI reads sys.argv itself
            return 0
        if words[:1] == ["lm"] and words[1:2] and words[1] in LIGHTNING_COMMANDS:
            lightning_cli(words[1:], language_model=True)
            return 0
        args = build_parser().parse_args(words)
        debug = debug or args.debug
        code = args.run(args)
        if argv is None and args.run is transcribe_command:
            _exit_now(code)
        return code
    except Exception as err:
        if not debug and lost_peer(err):
            rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
            _fail(
                f"process {rank} of the distributed run lost contact with another one, which stopped "
                f"or stalled (its own output says why): {str(err).splitlines()[0][:300]}"
            )
            return 1
        if debug or not is_input_error(err):
            raise
        _fail(str(err))
        return 1


if __name__ == "__main__":
    sys.exit(main())
