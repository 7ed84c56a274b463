"""Long audio check: one recording of many test clips, transcribed in one call.

    python -m recipes.synth.long_audio [--minutes 60] [--model MODEL] [--decoder greedy|beam]

Strings test (then dev) clips, in manifest order, into one recording with 0.5-1.5 s of faint
noise between them, writes it to ``exp/synth-long/recording.flac``, transcribes it with
``asr transcribe --format json`` in a child process and reports: WER against the clips'
joined references, the share of words timed inside a clip rather than in a gap (global
timestamps), wall time of the whole command (start-up and model loading included) and the
peak resident memory of that process, which holds the recording as 16 kHz float32 (230 MB
an hour).
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from torchmetrics.functional.text import word_error_rate

from asr.audio import SAMPLE_RATE
from asr.data import read_cuts
from asr.files import write_atomically
from asr.text import normalize_text

OUT = Path("exp/synth-long")


def build(cuts, seconds: float, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]], list[str]]:
    """The recording, each clip's (start, end) in it, and each clip's reference."""
    rng = np.random.default_rng(seed)
    parts, spans, refs, at = [], [], [], 0.0
    for cut in cuts:
        if at >= seconds:
            break
        clip = cut.resample(SAMPLE_RATE).load_audio().mean(axis=0).astype(np.float32)
        gap = (0.003 * rng.standard_normal(int(rng.uniform(0.5, 1.5) * SAMPLE_RATE))).astype(np.float32)
        parts += [clip, gap]
        spans.append((at, at + len(clip) / SAMPLE_RATE))
        refs.append(normalize_text(cut.supervisions[0].text))
        at += (len(clip) + len(gap)) / SAMPLE_RATE
    if at < seconds:
        raise ValueError(f"the manifest holds only {at / 60:.1f} min of audio; ask for less")
    return np.concatenate(parts), spans, refs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.synth.long_audio", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--decoder", choices=["greedy", "beam"], default="greedy")
    parser.add_argument(
        "--cuts", nargs="+", default=[f"data/synth/cuts_{s}.jsonl.gz" for s in ("test", "dev")]
    )
    args = parser.parse_args(argv)
    audio, spans, refs = build([cut for path in args.cuts for cut in read_cuts(path)], args.minutes * 60)
    path = OUT / "recording.flac"
    write_atomically(path, lambda partial: sf.write(partial, audio, SAMPLE_RATE, format="FLAC"))
    command = [sys.executable, "-m", "asr.cli", "transcribe", str(path), "--format", "json"]
    command += ["--decoder", args.decoder] + (["--model", args.model] if args.model else [])
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    (result,) = json.loads(out.stdout)
    words = result["words"]
    inside = sum(any(s - 0.2 <= w["start"] < w["end"] <= e + 0.2 for s, e in spans) for w in words)
    wer = float(word_error_rate(result["text"], " ".join(refs)))
    print(
        f"{path}: {result['duration'] / 60:.1f} min, {len(spans)} clips, {args.decoder}: "
        f"WER {100 * wer:.2f} %, "
        f"{100 * inside / max(1, len(words)):.1f} % of {len(words)} words timed inside a clip, "
        f"{elapsed:.0f} s ({result['duration'] / elapsed:.0f}x real time), peak RSS {peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
