"""Live transcription: the shipped streaming model (an exact :class:`asr.streaming.Stream`)
beside the default bidirectional one (a :class:`asr.streaming.WindowStream`), fed each bench
test clip and a second and a half of silence after it in 100 ms chunks.

    python -m benchmarks.streaming [--models streaming default] [--chunk-ms 100] --json OUT

Per clip: the compute time of every chunk (real-time factor: compute / audio), the first
partial's latency (the audio heard plus the compute of the chunk that showed the first word,
less that word's start), the final latency after a pause (the same for the chunk after
which the words became final, less the end of the last one: the pause setting plus the
look-ahead plus compute) and the time ``finish()`` takes when the end of the audio is
signalled. Chunks are fed as fast as they are processed, so latencies assume the machine keeps
up with real time (a real-time factor under 1). WER of the final text of each stream, with
each model's own final decoding (its beam search and LM).
"""

import argparse
import statistics
import time

import numpy as np

from asr.audio import SAMPLE_RATE
from asr.data import read_cuts
from asr.model import load_model
from asr.streaming import open_stream
from benchmarks.common import TEST_SETS, bench_corpus, write_json

SILENCE = 1.5  # seconds after each clip: a pause for the stream to end its words at


def stream_clip(model, audio: np.ndarray, chunk_seconds: float, pause: float) -> dict:
    """Stream one clip; its text and timings (see the module's docstring)."""
    stream = open_stream(model, pause=pause)
    step = max(1, round(chunk_seconds * SAMPLE_RATE))
    compute, first_partial, final_at_pause = 0.0, None, None
    for start in range(0, len(audio), step):
        started = time.perf_counter()
        result = stream.feed(audio[start : start + step])
        spent = time.perf_counter() - started
        compute += spent
        heard = min(start + step, len(audio)) / SAMPLE_RATE
        if first_partial is None and result.words:
            first_partial = heard + spent - result.words[0].start
        if final_at_pause is None and stream.committed:
            final_at_pause = heard + spent - stream.committed[-1].end
    started = time.perf_counter()
    final = stream.finish()
    finish = time.perf_counter() - started
    return {
        "text": final.text, "compute": compute + finish, "first_partial": first_partial,
        "final_at_pause": final_at_pause, "finish": finish, "mode": stream.mode,
    }  # fmt: skip


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def measure(models: list[str], chunk_seconds: float, pause: float, clips: int | None) -> dict:
    from torchmetrics.functional.text import word_error_rate

    data = bench_corpus()
    silence = np.zeros(round(SILENCE * SAMPLE_RATE), dtype=np.float32)
    rows = []
    for name in models:
        model = load_model(name)
        for set_name in TEST_SETS:
            cuts = list(read_cuts(data / f"cuts_{set_name}.jsonl.gz"))[:clips]
            audio = [np.concatenate([cut.load_audio()[0].astype(np.float32), silence]) for cut in cuts]
            runs = [stream_clip(model, a, chunk_seconds, pause) for a in audio]
            refs = [" ".join(s.text for s in cut.supervisions) for cut in cuts]
            seconds = sum(len(a) for a in audio) / SAMPLE_RATE
            rows.append({
                "model": name, "mode": runs[0]["mode"], "test_set": set_name, "clips": len(cuts),
                "wer": round(100 * float(word_error_rate([r["text"] for r in runs], refs)), 2),
                "real_time_factor": round(sum(r["compute"] for r in runs) / seconds, 4),
                "first_partial_s": _median([r["first_partial"] for r in runs]),
                "final_at_pause_s": _median([r["final_at_pause"] for r in runs]),
                "finals_at_pause": sum(r["final_at_pause"] is not None for r in runs),
                "finish_s": _median([r["finish"] for r in runs]),
            })  # fmt: skip
    return {"chunk_ms": round(1000 * chunk_seconds), "pause": pause, "silence": SILENCE, "rows": rows}


def markdown(result: dict) -> str:
    def seconds(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = [
        f"Each clip then {result['silence']} s of silence, in {result['chunk_ms']} ms chunks, words "
        f"final after a pause of {result['pause']} s; medians over clips:",
        "",
        "| model | stream | test set | WER % | real-time factor | first partial s | final after speech s "
        "| finish() s |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {r['model']} | {r['mode']} | {r['test_set']} | {r['wer']:.2f} | {r['real_time_factor']:.3f} "
            f"| {seconds(r['first_partial_s'])} | {seconds(r['final_at_pause_s'])} "
            f"({r['finals_at_pause']} of {r['clips']}) | {seconds(r['finish_s'])} |"
            for r in result["rows"]
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.streaming", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--models", nargs="+", default=["streaming", "default"], help="model files or names")
    parser.add_argument("--chunk-ms", type=float, default=100.0)
    parser.add_argument("--pause", type=float, default=0.8)
    parser.add_argument("--clips", type=int, help="the first N clips of each test set (default: all)")
    parser.add_argument("--json", required=True, help="write the result here")
    args = parser.parse_args(argv)
    write_json(measure(args.models, args.chunk_ms / 1000, args.pause, args.clips), args.json)


if __name__ == "__main__":
    main()
