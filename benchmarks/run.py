"""``make bench``: every benchmark in one run, written as a Markdown table, JSON and a chart.

    python -m benchmarks.run [--out exp/bench] [--repeats 3] [--model M] [--only PART ...]

Parts: training (throughput against a deepspeech.pytorch-style loop), inference (x real time
and WER: fp32, bf16, int8, ONNX Runtime, beam + LM, PocketSphinx), stages (reading, resampling,
features, network, greedy and beam search, each timed alone), limit (FLOPs per audio
second against the measured matmul peak), scaling (input length and batch size), serving
(requests per second and latency of asr serve for 1, 4 and 16 clients), startup (one clip
from the command line, whole process, and its stages, beside PocketSphinx's), data (peak RSS
of the training sampler over lazy manifests of 10,000 and 1,000,000 cuts; audio read from Shar
shards against one file per clip), cluster (config_gpu.yaml's network trained here, scaled to
8 GPUs by their published speed: an estimate for LibriSpeech 960 h), streaming (live
transcription in 100 ms chunks: real-time factor, first-partial and final latency, WER; the
streaming model beside the default one). Each part
runs in its own process; the results file is rewritten after each, so a failed part keeps
the others'. All figures come from this one run on this one machine.
"""

import argparse
import time
from pathlib import Path

from benchmarks import cluster, data, inference, limit, scaling, serving, stages, startup, streaming, training
from benchmarks.common import DATA, bench_corpus, in_fresh_process, machine, write_json

PARTS = (
    "training",
    "inference",
    "stages",
    "limit",
    "scaling",
    "serving",
    "startup",
    "streaming",
    "data",
    "cluster",
)
TITLES = {
    "training": "Training throughput (same cuts, same model size)",
    "inference": "Inference: x real time and accuracy (bench test sets, 100 clips each)",
    "stages": "Where transcription time goes, stage by stage",
    "limit": "The hardware limit",
    "scaling": "Scaling with input length and batch size",
    "serving": "Serving: asr serve under 1, 4 and 16 clients at once",
    "startup": "Start-up: one clip from the command line",
    "streaming": "Live transcription: latency and real-time factor in 100 ms chunks",
    "data": "Training data at scale: lazy manifest memory, Shar read speed",
    "cluster": "LibriSpeech 960 h on 8 GPUs: an estimate from this machine",
}


def _arguments(part: str, repeats: int, model: str | None) -> list[str]:
    model_args = ["--model", model] if model else []
    if part == "training":
        return ["--cuts", str(DATA / "cuts_train.jsonl.gz"), "--repeats", str(repeats)]
    if part == "cluster":
        return ["--cuts", str(DATA / "cuts_train.jsonl.gz")]
    if part == "limit":
        return model_args
    if part == "serving":
        return model_args
    if part == "startup":
        return ["--repeats", str(repeats)]
    if part == "data":
        return ["--repeats", str(repeats), "--stats-cuts", str(DATA / "cuts_train.jsonl.gz")]
    if part == "streaming":  # one pass: its figures are per clip, over 200 clips
        return ["--models", "streaming", model or "default"]
    return [*model_args, "--repeats", str(repeats)]


def summary(results: dict) -> list[str]:
    """The headline ratios, each measured side by side in this run."""
    lines = []
    if "training" in results:
        ratio = results["training"]["ratio_vs_reference"]
        lines.append(f"- training: ours {ratio:.1f}x the reference loop's audio seconds per wall second")
    if "inference" in results:
        rows = {(r["recognizer"], r["test_set"]): r for r in results["inference"]["rows"]}
        for test_set in ("test", "test_unseen_voice"):
            ours, ps = rows["fp32 greedy", test_set], rows["PocketSphinx 5.1.1", test_set]
            beam = next(r for (name, s), r in rows.items() if s == test_set and name.startswith("fp32 beam"))
            other = [r for (name, s), r in rows.items() if s == test_set and name.startswith("pyctc")]
            lines.append(
                f"- {test_set}: greedy {ours['x_real_time']:.0f}x real time (WER {ours['wer']:.1f} %), "
                f"beam + LM {beam['x_real_time']:.0f}x (WER {beam['wer']:.1f} %)"
                + "".join(f", pyctcdecode {r['x_real_time']:.0f}x (WER {r['wer']:.1f} %)" for r in other)
                + f", PocketSphinx {ps['x_real_time']:.0f}x (WER {ps['wer']:.1f} %): greedy "
                f"{ours['x_real_time'] / ps['x_real_time']:.0f}x and beam + LM "
                f"{beam['x_real_time'] / ps['x_real_time']:.0f}x PocketSphinx's speed"
            )
    if "data" in results:
        memory, read = results["data"]["memory"], results["data"]["read"]
        small, large = min(memory, key=lambda r: r["size"]), max(memory, key=lambda r: r["size"])
        lines.append(
            f"- data: the training sampler's peak RSS over {large['size']:,} cuts "
            f"{results['data']['memory_ratio']:.2f}x that over {small['size']:,}, a training process's "
            f"{results['data']['training_memory_ratio']:.2f}x; Shar shards read "
            f"{read['ratio_shar_vs_files']:.2f}x as fast as one file per clip"
        )
    return lines


def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"`{results['command']}`, {results['date']}, on {m['cpu']} ({m['cores']} cores, "
        f"{m['memory_gb']} GB, avx512_bf16: {m['avx512_bf16']}), torch {m['torch']}, "
        f"{m['torch_threads']} threads; each figure the median of {results['repeats']} runs.",
        "",
        *summary(results),
    ]
    renderers = {
        "training": training.markdown,
        "inference": inference.markdown,
        "stages": stages.markdown,
        "limit": lambda r: limit.markdown(r, _greedy_speed(results)),
        "scaling": scaling.markdown,
        "serving": serving.markdown,
        "startup": startup.markdown,
        "streaming": streaming.markdown,
        "data": data.markdown,
        "cluster": cluster.markdown,
    }
    for part in PARTS:
        if part in results:
            lines += ["", f"## {TITLES[part]}", "", renderers[part](results[part])]
    return "\n".join(lines) + "\n"


def _greedy_speed(results: dict) -> float | None:
    rows = results.get("inference", {}).get("rows", [])
    greedy = [r for r in rows if r["recognizer"] == "fp32 greedy" and r["test_set"] == "test"]
    return greedy[0]["x_real_time"] if greedy else None


def chart(results: dict, path: Path) -> None:
    """Four panels: training throughput, inference speed, time and memory against input
    length, and throughput against batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    if "training" in results:
        rows = results["training"]["rows"]
        ax = axes[0, 0]
        ax.barh([r["name"] for r in rows], [r["audio_seconds_per_second"] for r in rows], color="tab:blue")
        ax.set(title="training: audio seconds per wall second", xlabel="audio s / s")
        ax.invert_yaxis()
    if "inference" in results:
        rows = [r for r in results["inference"]["rows"] if r["test_set"] == "test"]
        ax = axes[0, 1]
        ax.barh([r["recognizer"] for r in rows], [r["x_real_time"] for r in rows], color="tab:green")
        for i, r in enumerate(rows):
            ax.text(r["x_real_time"], i, f" WER {r['wer']:.1f} %", va="center", fontsize=8)
        ax.set(title="inference on test: x real time", xlabel="audio s / wall s", xscale="log")
        ax.invert_yaxis()
    if "scaling" in results:
        rows = results["scaling"]["rows"]
        ax = axes[1, 0]
        for kind, style in (("transcribe", "o-"), ("network", "s--")):
            points = [r for r in rows if r["kind"] == kind]
            seconds = [r["audio_seconds"] for r in points]
            ax.plot(seconds, [r["wall_seconds"] for r in points], style, label=kind)
        ax.set(title="time and memory against input length", xlabel="audio seconds", ylabel="wall seconds",
               xscale="log", yscale="log")  # fmt: skip
        ax.legend(loc="upper left")
        rss = ax.twinx()
        points = [r for r in rows if r["kind"] == "transcribe"]
        rss.plot([r["audio_seconds"] for r in points], [r["peak_rss_mb"] for r in points], "r:")
        rss.set(ylabel="peak RSS MB (transcribe)")
        ax = axes[1, 1]
        points = [r for r in rows if r["kind"] == "batch"]
        ax.plot([r["size"] for r in points], [r["x_real_time"] for r in points], "o-")
        ax.set(title="network throughput against batch size (3 s clips)", xlabel="clips per batch",
               ylabel="x real time", xscale="log")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split(":")[0])
    parser.add_argument("--out", type=Path, default=Path("exp/bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    args = parser.parse_args(argv)
    bench_corpus()
    everything = args.only == list(PARTS)
    results = {
        "command": "make bench" if everything else f"python -m benchmarks.run --only {' '.join(args.only)}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "repeats": args.repeats,
        "machine": machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for part in args.only:
        started = time.perf_counter()
        print(f"bench: {part} ...", flush=True)
        results[part] = in_fresh_process(f"benchmarks.{part}", *_arguments(part, args.repeats, args.model))
        print(f"bench: {part} done in {time.perf_counter() - started:.0f} s", flush=True)
        write_json(results, args.out / "results.json")
    (args.out / "results.md").write_text(report(results))
    chart(results, args.out / "results.png")
    print(report(results))
    print(f"written: {args.out}/results.md, results.json, results.png")


if __name__ == "__main__":
    main()
