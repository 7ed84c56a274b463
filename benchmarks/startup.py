"""Start-up: one clip transcribed from the command line, whole process, and where its time goes.

    python -m benchmarks.startup --json OUT [--clip CLIP] [--repeats 5]

Rows, each the median wall time of ``--repeats`` fresh processes on the same clip:
``asr transcribe CLIP`` with the default beam search and LM, the same with ``--decoder greedy``,
the Python API (``import asr; asr.load_model().transcribe(CLIP)``), the same without the
objects frozen at exit (``atexit.unregister(gc.freeze)``), and PocketSphinx 5.1.1's
whole process (import, model load, decode) as the reference. Then the stages of one process,
timed in it: imports, model load, audio, network, building the beam search over the LM as
KenLM's binary trie and, side by side, the same with the lexicon spelled anew (not read from
its ``.spelled.npz``) and as the ARPA file, the search and the word alignment.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.common import timed, write_json

CLIP = "recipes/synth/demo/synth-test-000000.flac"
ASR = str(Path(sys.executable).with_name("asr"))

POCKETSPHINX = """
import sys, soundfile, numpy as np
from pocketsphinx import Decoder
audio, rate = soundfile.read(sys.argv[1], dtype="int16")
decoder = Decoder(samprate=rate, loglevel="FATAL")
decoder.start_utt(); decoder.process_raw(audio.tobytes(), full_utt=True); decoder.end_utt()
print(decoder.hyp().hypstr if decoder.hyp() else "")
"""

API = "import sys, asr; print(asr.load_model().transcribe(sys.argv[1]).text)"
# The same without the freeze at exit (asr/__init__.py): the interpreter's last collections walk
# every object.
API_THAWED = API.replace("import sys, asr;", "import atexit, gc, sys, asr; atexit.unregister(gc.freeze);")

# One process, stage by stage (the search built from the cached spellings and the binary LM,
# then without the spellings, then from the ARPA file, side by side).
STAGES = """
import json, sys, time
marks = [("start", time.perf_counter())]
def mark(name):
    marks.append((name, time.perf_counter()))
import torch
mark("import torch")
import asr
from asr import decoding, inference
mark("import asr")
model = asr.load_model()
mark("load model")
wave = torch.from_numpy(inference._read(sys.argv[1]))
mark("read audio")
with torch.inference_mode():
    (_, log_probs), = inference.log_probs_batch(model, [wave])
mark("features + network")
options = inference.default_options(model)
search = decoding.BeamSearch(options, model.tokenizer, model.config.frame_shift)
mark("beam search built (binary LM)")
decoding._word_search.cache_clear()
decoding._read_spelled = lambda path, source: None
decoding._write_spelled = lambda path, source, table: None
decoding.BeamSearch(options, model.tokenizer, model.config.frame_shift)
mark("beam search built (binary LM, lexicon spelled anew)")
decoding._word_search.cache_clear()
decoding.build_binary_tool = lambda: None
decoding.binary_lm = lambda lm: lm
decoding.BeamSearch(options, model.tokenizer, model.config.frame_shift)
mark("beam search built (ARPA LM)")
hyps = search._search(log_probs.float().contiguous())
mark("search")
decoding.align_words(log_probs, " ".join(hyps[0][1]), model.tokenizer, model.config.frame_shift)
mark("word alignment")
print(json.dumps([(name, round(t - marks[i][1], 4)) for i, (name, t) in enumerate(marks[1:])]))
"""


def wall(command: list[str], repeats: int) -> tuple[float, str]:
    """Median wall seconds of ``command`` run ``repeats`` times, and its output."""
    runs: list[subprocess.CompletedProcess] = []
    times = [
        timed(lambda: runs.append(subprocess.run(command, capture_output=True, text=True)))
        for _ in range(repeats)
    ]
    failed = next((run for run in runs if run.returncode != 0), None)
    if failed is not None:
        raise RuntimeError(f"{' '.join(command)} failed:\n{failed.stderr[-2000:]}")
    return statistics.median(times), runs[-1].stdout.strip()


def measure(clip: str, repeats: int) -> dict:
    wall([ASR, "transcribe", clip], 1)  # the LM's binary and spelled lexicon made, files in the page cache
    rows = []
    for name, command in (
        ("asr transcribe (beam + LM, default)", [ASR, "transcribe", clip]),
        ("asr transcribe --decoder greedy", [ASR, "transcribe", "--decoder", "greedy", clip]),
        ("python: asr.load_model().transcribe (beam + LM)", [sys.executable, "-c", API, clip]),
        ("the same, no gc.freeze at exit", [sys.executable, "-c", API_THAWED, clip]),
        ("PocketSphinx 5.1.1 (python: import, load, decode)", [sys.executable, "-c", POCKETSPHINX, clip]),
    ):
        seconds, text = wall(command, repeats)
        rows.append({"command": name, "seconds": round(seconds, 3), "text": text})
    stages = json.loads(subprocess.run(
        [sys.executable, "-c", STAGES, clip], capture_output=True, text=True, check=True
    ).stdout)  # fmt: skip
    return {"clip": clip, "repeats": repeats, "rows": rows, "stages": stages}


def markdown(result: dict) -> str:
    lines = [
        f"Whole process, median of {result['repeats']} runs on `{result['clip']}`:",
        "",
        "| command | wall s |",
        "|---|---|",
        *(f"| {r['command']} | {r['seconds']:.2f} |" for r in result["rows"]),
        "",
        "Stages of one process (the next two rows build the same search again: with the lexicon "
        "spelled anew, then also from the ARPA file instead of the binary trie):",
        "",
        "| stage | s |",
        "|---|---|",
        *(f"| {name} | {seconds:.3f} |" for name, seconds in result["stages"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    parser.add_argument("--clip", default=CLIP)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", required=True, help="write the result here")
    args = parser.parse_args(argv)
    write_json(measure(args.clip, args.repeats), args.json)


if __name__ == "__main__":
    main()
