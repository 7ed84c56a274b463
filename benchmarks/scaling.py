"""How time and memory grow with the input: one recording of 1 s to 60 min transcribed
(cut at pauses), the network alone on one unbroken input of 1 s to 10 min, and batches of
1 to 64 three-second clips. Every point runs in a fresh process, so its peak RSS is its own.

    python -m benchmarks.scaling [--model M] [--repeats 3] --json OUT
"""

import argparse

import numpy as np
import torch

from asr.data import read_cuts
from asr.decoding import DecodingOptions
from asr.inference import pad_batch
from asr.model import load_model
from benchmarks.common import bench_corpus, in_fresh_process, median_rate, peak_rss_mb, write_json

LENGTHS = (1, 10, 60, 600, 3600)  # seconds of one recording given to transcribe()
NETWORK_LENGTHS = (1, 10, 60, 600)  # seconds of one unbroken input to the network
BATCHES = (1, 2, 4, 8, 16, 32, 64)  # clips of CLIP_SECONDS per forward pass
CLIP_SECONDS = 3.0
GAP_SECONDS = 0.4  # silence between clips strung into a recording


def recording(seconds: float) -> np.ndarray:
    """``seconds`` of speech: the bench test clips one after another (again from the first
    when they run out), with short pauses between them, as in a long recording. Written into
    one array made up front, so building it leaves no peak of memory above its own size."""
    cuts = list(read_cuts(bench_corpus() / "cuts_test.jsonl.gz"))
    audio = np.zeros(round(16000 * seconds), dtype=np.float32)
    gap = round(16000 * GAP_SECONDS)
    filled, i = 0, 0
    while filled < len(audio):
        clip = cuts[i % len(cuts)].load_audio().mean(axis=0)[: len(audio) - filled]
        audio[filled : filled + len(clip)] = clip
        filled += len(clip) + gap
        i += 1
    return audio


def _point(kind: str, size: float, model_path: str | None, repeats: int) -> dict:
    """One measurement, in this process: wall seconds (median) and audio seconds per second."""
    model = load_model(model_path)
    if kind == "transcribe":
        audio = recording(size)
        run = lambda: model.transcribe(audio, sample_rate=16000, options=DecodingOptions())  # noqa: E731
        seconds = size
    else:
        count, length = (int(size), CLIP_SECONDS) if kind == "batch" else (1, size)
        audio, lens = pad_batch([torch.from_numpy(recording(length))] * count)
        seconds = count * length

        def run():
            with torch.inference_mode():
                model(audio, lens)

    run()  # warm-up: oneDNN picks its kernels for these shapes
    rate, rates = median_rate(seconds, run, repeats)
    return {"kind": kind, "size": size, "audio_seconds": seconds, "wall_seconds": seconds / rate,
            "x_real_time": rate, "runs": rates, "peak_rss_mb": peak_rss_mb()}  # fmt: skip


def measure(model_path: str | None, repeats: int) -> dict:
    extra = ["--model", model_path] if model_path else []
    points = [("transcribe", s) for s in LENGTHS] + [("network", s) for s in NETWORK_LENGTHS]
    points += [("batch", b) for b in BATCHES]
    rows = [
        in_fresh_process("benchmarks.scaling", "--point", kind, str(size), "--repeats", str(repeats), *extra)
        for kind, size in points
    ]
    return {"rows": rows, "repeats": repeats}


def markdown(result: dict) -> str:
    titles = {
        "transcribe": "one recording, transcribed greedily (cut at pauses)",
        "network": "network alone, one unbroken input",
        "batch": f"batch of {CLIP_SECONDS:.0f} s clips, network alone",
    }
    lines = []
    for kind, title in titles.items():
        rows = [r for r in result["rows"] if r["kind"] == kind]
        size = "clips" if kind == "batch" else "audio"
        lines += [f"{title}:", "", f"| {size} | wall s | x real time | peak RSS MB |", "|---|---|---|---|"]
        for r in rows:
            label = f"{int(r['size'])}" if kind == "batch" else _duration(r["size"])
            cells = f"{r['wall_seconds']:.3f} | {r['x_real_time']:.0f} | {r['peak_rss_mb']:.0f}"
            lines.append(f"| {label} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split(":")[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--point", nargs=2, metavar=("KIND", "SIZE"), help="one point, in this process")
    parser.add_argument("--json", required=True, help="write the result here")
    args = parser.parse_args(argv)
    if args.point:
        result = _point(args.point[0], float(args.point[1]), args.model, args.repeats)
    else:
        result = measure(args.model, args.repeats)
    write_json(result, args.json)


if __name__ == "__main__":
    main()
