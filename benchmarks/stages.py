"""Where transcription time goes: each stage of ``model.transcribe_batch`` timed on its own,
over the clips of the bench test set, warm (each stage run once before it is timed).

    python -m benchmarks.stages [--model M] [--repeats 3] --json OUT

Stages: reading the files (decoding FLAC), resampling (the same audio as a 44.1 kHz input
would need it: soxr HQ to 16 kHz; the bench clips are 16 kHz already, so this stage is not in
the totals), log-mel features, the network (convolutions, RNN layers, output layer; in the
length-sorted batches of ``transcribe_batch``), and the search: greedy, and the model's beam
search with its LM. Each is given as x real time (audio seconds per wall second) and as a
share of the whole: reading + features + network + search.
"""

import argparse
import statistics
import time

import soxr
import torch

from asr.audio import SAMPLE_RATE, load_audio
from asr.data import read_cuts
from asr.decoding import DecodingOptions
from asr.inference import _batches, default_options, get_decoder, log_probs_batch, pad_batch
from asr.model import load_model
from benchmarks.common import bench_corpus, write_json


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(model_path: str | None, repeats: int, test_set: str = "test") -> dict:
    model = load_model(model_path).eval()
    cuts = list(read_cuts(bench_corpus() / f"cuts_{test_set}.jsonl.gz"))
    paths = [cut.recording.sources[0].source for cut in cuts]
    waves = [torch.from_numpy(load_audio(path)) for path in paths]
    seconds = sum(len(w) for w in waves) / SAMPLE_RATE
    at_44k = [soxr.resample(w.numpy(), SAMPLE_RATE, 44100) for w in waves]
    by_length = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    durations = [len(w) / SAMPLE_RATE for w in waves]
    batches = [pad_batch([waves[i] for i in batch]) for batch in _batches(by_length, durations)]
    log_probs = [lp for _, lp in log_probs_batch(model, waves)]
    config = model.config
    searches = {
        f"{options.name} search": get_decoder(options, config.alphabet, config.frame_shift)
        for options in (DecodingOptions(), default_options(model))
    }
    stages = {
        "read files (FLAC)": lambda: [load_audio(path) for path in paths],
        "resample 44.1 -> 16 kHz": lambda: [load_audio(a, 44100) for a in at_44k],
        "log-mel features": lambda: [model.frontend(audio, lengths) for audio, lengths in batches],
        "features + network": lambda: [model(audio, lengths) for audio, lengths in batches],
        **{name: (lambda d=d: [d(lp) for lp in log_probs]) for name, d in searches.items()},
    }
    times = {}
    with torch.inference_mode():
        for name, stage in stages.items():
            stage()  # warm: caches, the LM's memory map, the allocator
            times[name] = statistics.median(_timed(stage) for _ in range(repeats))
    # The network alone: the forward pass less its features (one forward pass, not a copy of it).
    times["network"] = times.pop("features + network") - times["log-mel features"]
    common = times["read files (FLAC)"] + times["log-mel features"] + times["network"]
    order = ["read files (FLAC)", "resample 44.1 -> 16 kHz", "log-mel features", "network", *searches]
    rows = [
        {"stage": name, "wall_seconds": round(times[name], 4), "x_real_time": round(seconds / times[name], 1)}
        for name in order
    ]
    pipelines = {name: common + times[name] for name in searches}
    return {
        "test_set": test_set, "clips": len(cuts), "audio_seconds": round(seconds, 1), "repeats": repeats,
        "threads": torch.get_num_threads(), "rows": rows,
        "pipelines": [
            {"pipeline": name.removesuffix(" search"), "x_real_time": round(seconds / total, 1),
             "shares": {stage: round(100 * times[stage] / total, 1)
                        for stage in ("read files (FLAC)", "log-mel features", "network", name)}}
            for name, total in pipelines.items()
        ],
    }  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        f"{result['clips']} clips of `{result['test_set']}` ({result['audio_seconds']} s of audio), "
        f"{result['threads']} threads, warm, median of {result['repeats']} runs of each stage:",
        "",
        "| stage | wall s | x real time |",
        "|---|---|---|",
        *(f"| {r['stage']} | {r['wall_seconds']:.3f} | {r['x_real_time']:.0f} |" for r in result["rows"]),
        "",
        "| whole (read + features + network + search) | x real time | share of the time per stage |",
        "|---|---|---|",
        *(
            f"| {p['pipeline']} | {p['x_real_time']:.0f} | "
            + ", ".join(f"{stage} {share:.0f} %" for stage, share in p["shares"].items())
            + " |"
            for p in result["pipelines"]
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stages", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", required=True, help="write the result here")
    args = parser.parse_args(argv)
    write_json(measure(args.model, args.repeats), args.json)


if __name__ == "__main__":
    main()
