"""Serving: requests per second and latency of ``asr serve`` on loopback, for 1, 4 and 16
clients sending at once, with the requests that wait together batched and one at a time.

    python -m benchmarks.serving [--model M] [--requests 48] --json OUT

The server runs in its own process (``asr serve``, one worker), as a user runs it; the clients
are threads of this process, each sending the bench test clips one after another and timing
each answer. Both decoders are measured: greedy, and the model's own beam search + LM.
"""

import argparse
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.common import bench_corpus, write_json

CLIENTS = (1, 4, 16)
DECODERS = ("greedy", "beam")


class Server:
    """``asr serve`` on a free port of 127.0.0.1, in a child process."""

    def __init__(self, model: str | None, batch_seconds: float):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [sys.executable, "-m", "asr.cli", "serve", "--port", str(self.port)]
        command += ["--batch-seconds", str(batch_seconds), *(["--model", model] if model else [])]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "Server":
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"asr serve failed:\n{self.process.stderr.read().decode()[-2000:]}")
            try:
                httpx.get(f"{self.url}/health", timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("asr serve did not start within 300 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(30)

    def batches(self) -> int:
        import httpx

        return httpx.get(f"{self.url}/health").json()["batches"]


def load(server: Server, clips: list[bytes], seconds: list[float], clients: int, requests: int, decoder: str):
    """Send ``requests`` transcriptions from ``clients`` threads at once; their figures."""
    import httpx

    url = f"{server.url}/v1/transcribe?decoder={decoder}&word_timestamps=false"

    def client(k: int) -> list[tuple[float, float]]:
        done = []
        with httpx.Client(timeout=600) as http:
            for n in range(k, requests, clients):
                started = time.perf_counter()
                http.post(url, content=clips[n % len(clips)]).raise_for_status()
                done.append((time.perf_counter() - started, seconds[n % len(clips)]))
        return done

    before = server.batches()
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = [item for part in pool.map(client, range(clients)) for item in part]
    wall = time.perf_counter() - started
    latencies = sorted(latency for latency, _ in answers)
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "requests_per_second": len(answers) / wall,
        "x_real_time": sum(audio for _, audio in answers) / wall,
        "p50_ms": 1000 * quantiles[49],
        "p90_ms": 1000 * quantiles[89],
        "p99_ms": 1000 * quantiles[98],
        "batches": server.batches() - before,
    }


def measure(model: str | None, requests: int) -> dict:
    from asr.data import read_cuts

    cuts = list(read_cuts(bench_corpus() / "cuts_test.jsonl.gz"))[:16]
    clips = [open(cut.recording.sources[0].source, "rb").read() for cut in cuts]
    seconds = [cut.duration for cut in cuts]
    rows = []
    for batching, batch_seconds in (("batched", 240.0), ("one at a time", 0.0)):
        with Server(model, batch_seconds) as server:
            for decoder in DECODERS:
                load(server, clips, seconds, 1, 4, decoder)  # warm-up: the LM and lexicon load
                for clients in CLIENTS:
                    figures = load(server, clips, seconds, clients, requests, decoder)
                    rows.append({"batching": batching, "decoder": decoder, "clients": clients, **figures})
                    print(rows[-1], flush=True)
    return {"requests": requests, "clip_seconds": statistics.mean(seconds), "rows": rows}


def markdown(result: dict) -> str:
    lines = [
        f"{result['requests']} requests of bench test clips ({result['clip_seconds']:.1f} s on average) "
        "per row, from 1, 4 or 16 clients at once, to `asr serve` (one worker) on loopback:",
        "",
        "| decoder | batching | clients | requests/s | x real time | p50 ms | p90 ms | p99 ms | batches |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        figures = [f"{r['requests_per_second']:.1f}", f"{r['x_real_time']:.0f}"]
        figures += [f"{r[q]:.0f}" for q in ("p50_ms", "p90_ms", "p99_ms")] + [str(r["batches"])]
        lines.append(f"| {r['decoder']} | {r['batching']} | {r['clients']} | " + " | ".join(figures) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--requests", type=int, default=48, help="requests per row")
    parser.add_argument("--json", required=True, help="write the result here")
    args = parser.parse_args(argv)
    write_json(measure(args.model, args.requests), args.json)


if __name__ == "__main__":
    main()
