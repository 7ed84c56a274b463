"""What every benchmark shares: medians of repeated runs, measurements in a fresh process
(so a peak memory figure is that measurement's own), the bench corpus, the machine.
"""

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from asr.files import write_atomically

DATA = Path("data/bench")  # the synth recipe at --size small: 400 train, 100 test clips per test set
TEST_SETS = ("test", "test_unseen_voice")


def bench_corpus(data: Path = DATA) -> Path:
    """The bench corpus, made when missing (~25 s): the synth recipe's first clips, so its
    test sentences are the shipped model's unseen ones."""
    if not (data / "cuts_test_unseen_voice.jsonl.gz").exists():
        from recipes.synth.prepare import prepare

        prepare(data, size="small", stop_stage=4)
    return data


def peak_rss_mb() -> float:
    """The largest resident memory of this process so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median_rate(amount: float, fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """``amount`` per wall second of ``fn``: the median over ``repeats`` calls, and every call's."""
    rates = [amount / timed(fn) for _ in range(repeats)]
    return statistics.median(rates), rates


def in_fresh_process(module: str, *args: str) -> dict:
    """Run ``python -m <module> *args --json OUT`` and return the JSON it wrote.

    A new process per measurement: its peak RSS is that measurement's, and one measurement's
    caches, threads and allocator state do not flatter or burden the next.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", module, *args, "--json", str(out)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def write_json(result: dict, path) -> None:
    text = json.dumps(result, indent=2) + "\n"
    write_atomically(path, lambda partial: partial.write_text(text))


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    flags = ""
    if Path("/proc/cpuinfo").exists():
        info = Path("/proc/cpuinfo").read_text()
        names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
        flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "avx512_bf16": "avx512_bf16" in flags,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "os": platform.platform(),
    }
