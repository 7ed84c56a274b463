"""Training data at scale: the memory of a lazy manifest, the read speed of Shar shards, and
the feature statistics pass with parallel readers.

    python -m benchmarks.data --json OUT [--sizes 10000 1000000] [--clips 2000] [--repeats 3]
        [--stats-cuts data/bench/cuts_train.jsonl.gz]

Memory, over a lazy manifest of each of ``--sizes`` cuts, each measurement in a fresh process,
so its peak RSS is its own: one epoch of the training sampler (``SpeechDataModule``'s bucketing
sampler, as ``asr fit`` builds it; batches of cuts, no audio read), and a training process
(``asr fit``: a small network, ``--train-steps`` updates, its audio read, checkpoints written).
The manifests are made here, in a temporary folder: cuts of 2-15 s that all point at one 15 s
clip. The ratio is the peak RSS of the largest size over that of the smallest; the growth of
each sampler peak over the process's size after its imports (Lightning, torch and lhotse) is
given beside it.

Read speed: audio seconds decoded (``cut.load_audio()``, what the training batches call) per
wall second, ``--clips`` synthetic FLAC clips of 2-8 s read one file each through their
manifest and the same clips from Shar shards (``asr data shard``), alternately, the median of
``--repeats`` passes each. Both read files just written, from the page cache: the ratio is the
cost of opening and seeking one file per clip against one sequential stream per shard, and
leaves out the disk, which favours shards further (a spinning or network disk most).

Feature statistics (``--stats-cuts``): the pass that starts every training run (log-mel frames
of the training batches summed, ``LogMel.fit_stats`` as ``on_fit_start`` calls it), the audio
read and speed-perturbed by 0 (in the process), 1 or N DataLoader workers (N: the cores the
process may use), alternately, the median of ``--repeats`` passes each.
"""

import argparse
import gzip
import json
import random
import statistics
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from benchmarks.common import in_fresh_process, peak_rss_mb, timed, write_json

SIZES = (10_000, 1_000_000)  # cuts in the lazy manifests
TRAIN_STEPS = 20  # updates of the training process over each manifest
CLIPS = 2000  # clips read for the read speed (~2.8 h of audio)
RATE = 16000


def fake_manifest(path: Path, size: int, clip: Path) -> Path:
    """A manifest of ``size`` cuts of 2-15 s, all pointing at the 15 s ``clip``."""
    rng = random.Random(0)
    source = {"type": "file", "channels": [0], "source": str(clip)}
    recording = {"id": "clip", "sources": [source], "sampling_rate": RATE, "num_samples": 15 * RATE,
                 "duration": 15.0, "channel_ids": [0]}  # fmt: skip
    with gzip.open(path, "wt", compresslevel=1) as lines:
        for k in range(size):
            duration = round(rng.uniform(2.0, 15.0), 2)
            supervision = {"id": f"cut-{k}", "recording_id": "clip", "start": 0.0, "duration": duration,
                           "channel": 0, "text": f"sentence number {k}"}  # fmt: skip
            cut = {"id": f"cut-{k}", "start": 0.0, "duration": duration, "channel": 0,
                   "supervisions": [supervision], "recording": recording, "type": "MonoCut"}  # fmt: skip
            lines.write(json.dumps(cut) + "\n")
    return path


def memory_point(manifest: str) -> dict:
    """One epoch of the training sampler over ``manifest``, in this process."""
    from asr.data import SpeechDataModule

    before = peak_rss_mb()
    data = SpeechDataModule(train_cuts=manifest, num_workers=0)
    cuts = batches = 0
    sampler = data.train_dataloader().sampler

    def epoch():
        nonlocal cuts, batches
        for batch in sampler:
            cuts, batches = cuts + len(batch), batches + 1

    seconds = timed(epoch)
    peak = peak_rss_mb()
    return {"cuts": cuts, "batches": batches, "seconds": seconds, "rss_after_imports_mb": before,
            "peak_rss_mb": peak, "growth_mb": peak - before}  # fmt: skip


def training_point(manifest: str, steps: int) -> dict:
    """``asr fit`` over ``manifest`` for ``steps`` updates, in this process: a small network (2 x
    LSTM 64), 60 s batches, no validation."""
    import torch

    from asr.cli import main

    with tempfile.TemporaryDirectory() as run:
        # fmt: off
        code = main([
            "fit", "--data.train_cuts", manifest, "--data.val_cuts", manifest, "--data.num_workers", "0",
            "--data.max_duration", "60", "--model.net.hidden_size", "64", "--model.net.num_layers", "2",
            "--model.net.conv_channels", "64", "--model.stats_batches", "2",
            "--trainer.max_steps", str(steps),
            "--trainer.limit_val_batches", "0", "--checkpoint.monitor", "null",
            "--trainer.default_root_dir", run, "--trainer.enable_progress_bar", "false",
        ])
        # fmt: on
        if code != 0:
            raise RuntimeError(f"asr fit over {manifest} failed")
        done = torch.load(Path(run) / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    return {"steps": done, "peak_rss_mb": peak_rss_mb()}


def clips(folder: Path, count: int) -> Path:
    """``count`` FLAC clips of 2-8 s (tones gliding under a little noise) and their manifest."""
    from lhotse import CutSet, MonoCut, Recording

    rng = np.random.default_rng(0)
    cuts = []
    for k in range(count):
        n = int(rng.uniform(2, 8) * RATE)
        pitch = np.cumsum(np.linspace(*rng.uniform(100, 400, 2), n)) / RATE
        samples = 0.3 * np.sin(2 * np.pi * pitch) + 0.01 * rng.standard_normal(n)
        path = folder / f"clip{k:06d}.flac"
        sf.write(path, samples.astype(np.float32), RATE, format="FLAC")
        recording = Recording.from_file(path, recording_id=path.stem)
        cuts.append(MonoCut(path.stem, 0.0, recording.duration, 0, recording=recording))
    CutSet.from_cuts(cuts).to_file(folder / "cuts.jsonl.gz")
    return folder / "cuts.jsonl.gz"


def read_speed(count: int, repeats: int) -> dict:
    """Audio seconds decoded per wall second: one file per clip against Shar shards."""
    from asr.manifests import open_shar, read_cuts, write_shar

    with tempfile.TemporaryDirectory() as tmp:
        manifest = clips(Path(tmp), count)
        write_shar(manifest, Path(tmp) / "shar")
        seconds = sum(cut.duration for cut in read_cuts(manifest))
        sources = {"files": lambda: read_cuts(manifest), "shar": lambda: open_shar(Path(tmp) / "shar")}
        rates = {name: [] for name in sources}
        for _ in range(repeats):  # alternately: a slower moment of the machine costs both
            for name, cuts in sources.items():
                rates[name].append(seconds / timed(lambda cuts=cuts: [c.load_audio() for c in cuts()]))
    speed = {name: statistics.median(runs) for name, runs in rates.items()}
    return {"clips": count, "audio_seconds": seconds, "runs": rates,
            "files_seconds_per_second": speed["files"], "shar_seconds_per_second": speed["shar"],
            "ratio_shar_vs_files": speed["shar"] / speed["files"]}  # fmt: skip


def stats_pass(frontend, cuts: str, workers: int) -> tuple[float, float]:
    """One feature statistics pass over every training batch of ``cuts`` read by ``workers``
    DataLoader processes: (audio seconds, wall seconds)."""
    from asr.data import SpeechDataModule

    data = SpeechDataModule(train_cuts=cuts, num_workers=workers, max_duration=120, speed_perturb=[0.9, 1.1])
    samples = []

    def batches():
        for batch in data.train_dataloader():
            samples.append(int(batch["audio_lens"].sum()))
            yield batch["audio"], batch["audio_lens"]

    seconds = timed(lambda: frontend.fit_stats(batches()))
    return sum(samples) / RATE, seconds


def stats_speed(cuts: str, repeats: int) -> dict:
    """The feature statistics pass that starts a training run (``LogMel.fit_stats`` over the
    training loader's batches, as ``on_fit_start`` runs it) over every batch of ``cuts``, its
    audio read and speed-perturbed in the training process (0 workers) or by 1 or N DataLoader
    worker processes (N: the cores this process may use), alternately: audio seconds a second."""
    from asr.features import LogMel
    from asr.files import available_cores

    frontend = LogMel()
    rates: dict[int, list[float]] = {n: [] for n in sorted({0, 1, available_cores()})}
    audio = 0.0
    for _ in range(repeats):
        for workers in rates:
            audio, seconds = stats_pass(frontend, cuts, workers)
            rates[workers].append(audio / seconds)
    speed = {n: statistics.median(runs) for n, runs in rates.items()}
    rows = [{"workers": n, "seconds_per_second": v, "speedup": v / speed[0]} for n, v in speed.items()]
    return {"cuts": cuts, "audio_seconds": audio, "runs": {str(n): r for n, r in rates.items()}, "rows": rows}


def measure(
    sizes: list[int], count: int, repeats: int, stats_cuts: str | None = None, train_steps: int = TRAIN_STEPS
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.flac"
        noise = 0.01 * np.random.default_rng(0).standard_normal(15 * RATE)
        sf.write(clip, noise.astype(np.float32), RATE, format="FLAC")
        rows = []
        for size in sizes:
            manifest = str(fake_manifest(Path(tmp) / f"cuts_{size}.jsonl.gz", size, clip))
            steps = str(train_steps)
            training = in_fresh_process("benchmarks.data", "--train-point", manifest, "--train-steps", steps)
            rows.append({
                "size": size, **in_fresh_process("benchmarks.data", "--point", manifest),
                "training_steps": training["steps"], "training_peak_rss_mb": training["peak_rss_mb"],
            })  # fmt: skip
            Path(manifest).unlink()
    smallest, largest = min(rows, key=lambda r: r["size"]), max(rows, key=lambda r: r["size"])
    return {
        "memory": rows,
        "memory_ratio": largest["peak_rss_mb"] / smallest["peak_rss_mb"],
        "training_memory_ratio": largest["training_peak_rss_mb"] / smallest["training_peak_rss_mb"],
        "read": read_speed(count, repeats),
        **({"stats": stats_speed(stats_cuts, repeats)} if stats_cuts else {}),
    }


def markdown(result: dict) -> str:
    rows = result["memory"]
    read = result["read"]
    lines = [
        "One epoch of the training sampler over a lazy manifest (metadata only), a fresh process each:",
        "",
        "| cuts | batches | wall s | RSS after imports MB | peak RSS MB | growth MB |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['size']:,} | {r['batches']:,} | {r['seconds']:.1f} | {r['rss_after_imports_mb']:.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['growth_mb']:.0f} |"
            for r in rows
        ),  # fmt: skip
        "",
        f"Peak RSS of the largest over the smallest: {result['memory_ratio']:.2f}x for "
        f"{max(r['size'] for r in rows) / min(r['size'] for r in rows):.0f}x the cuts.",
        "",
        f"A training process (`asr fit`, 2 x LSTM 64, {rows[0]['training_steps']} updates of 60 s batches) "
        "over the same manifests, a fresh process each:",
        "",
        "| cuts | peak RSS MB |",
        "|---|---|",
        *(f"| {r['size']:,} | {r['training_peak_rss_mb']:.0f} |" for r in rows),
        "",
        f"Peak RSS of the largest over the smallest: {result['training_memory_ratio']:.2f}x.",
        "",
        f"Reading {read['clips']} clips ({read['audio_seconds'] / 3600:.2f} h), audio seconds decoded per "
        "wall second (median; from the page cache):",
        "",
        "| source | audio s / s |",
        "|---|---|",
        f"| one FLAC file per clip (manifest) | {read['files_seconds_per_second']:.0f} |",
        f"| Shar shards | {read['shar_seconds_per_second']:.0f} |",
        "",
        f"Shar: {read['ratio_shar_vs_files']:.2f}x the speed of one file per clip.",
    ]
    if "stats" in result:
        stats = result["stats"]
        lines += [
            "",
            f"The feature statistics pass that starts a run (log-mel frames of every training batch of "
            f"`{stats['cuts']}`, {stats['audio_seconds'] / 60:.1f} min of speed-perturbed audio), the audio "
            "read by DataLoader worker processes (`data.num_workers`; 0: in the training process):",
            "",
            "| workers | audio s / s | speed-up |",
            "|---|---|---|",
            *(
                f"| {r['workers']} | {r['seconds_per_second']:.0f} | {r['speedup']:.2f}x |"
                for r in stats["rows"]
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(SIZES), help="cuts in each lazy manifest"
    )
    parser.add_argument("--clips", type=int, default=CLIPS, help="clips read for the read speed")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the clips from each source")
    parser.add_argument("--point", metavar="MANIFEST", help="one sampler memory point, in this process")
    parser.add_argument(
        "--train-point", metavar="MANIFEST", help="one training memory point, in this process"
    )
    parser.add_argument("--train-steps", type=int, default=TRAIN_STEPS, help="updates of each training point")
    parser.add_argument(
        "--stats-cuts",
        metavar="MANIFEST",
        help="also time the feature statistics pass over these training cuts",
    )
    parser.add_argument("--json", required=True, help="write the result here")
    args = parser.parse_args(argv)
    if args.point:
        write_json(memory_point(args.point), args.json)
        return
    if args.train_point:
        write_json(training_point(args.train_point, args.train_steps), args.json)
        return
    result = measure(args.sizes, args.clips, args.repeats, args.stats_cuts, args.train_steps)
    write_json(result, args.json)
    print(markdown(result))


if __name__ == "__main__":
    main()
