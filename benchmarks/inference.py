"""Inference speed with accuracy beside it: the model in fp32, bf16 (autocast), int8 (dynamic
quantization of the LSTM and linear layers) and ONNX Runtime, decoding greedily and with the
beam search + word 3-gram it was tuned with; pyctcdecode's beam search (as wide, the same
3-gram) on the fp32 network's output; PocketSphinx on the same audio.

    python -m benchmarks.inference [--model M] [--repeats 3] --json OUT

Speed is audio seconds per wall second of recognition (audio already in memory, as
:func:`asr.evaluation.evaluate` measures it), the median of ``repeats`` passes; the passes go
round the recognizers in turn, so a slower minute of the machine does not fall on one alone.
"""

import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import torch

from asr.data import read_cuts
from asr.decoding import DecodingOptions
from asr.evaluation import Recognizer, evaluate, model_recognizer, pocketsphinx_recognizer
from asr.inference import log_probs_batch
from asr.model import load_model
from asr.onnx import export_onnx
from benchmarks.common import TEST_SETS, bench_corpus, write_json


def _in_bf16(recognize: Recognizer) -> Recognizer:
    def run(audio):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return recognize(audio)

    return run


def _int8(model):
    """Weights of LSTM and linear layers in int8, activations quantized on the fly."""
    return torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(model), {torch.nn.LSTM, torch.nn.GRU, torch.nn.Linear}, dtype=torch.qint8
    )


def variants(model_path: str | None, onnx_dir: Path) -> dict[str, tuple[object, DecodingOptions, bool]]:
    """Every variant of our model measured, by name: (network, decoding options, bf16 autocast).
    Each row names its decoding, and decodes with exactly that: "greedy" is greedy even for a
    model whose own default is its beam search."""
    model = load_model(model_path)
    beam = model.beam_options or DecodingOptions(method="beam")
    int8, onnx = _int8(model), load_model(export_onnx(model, onnx_dir / "model.onnx"))
    found = {}
    for options in (DecodingOptions(), beam):
        found[f"fp32 {options.name}"] = (model, options, False)
        found[f"bf16 {options.name}"] = (model, options, True)
        found[f"int8 {options.name}"] = (int8, options, False)
        found[f"onnxruntime {options.name}"] = (onnx, options, False)
    return found


def pyctcdecode_recognizer(model, options: DecodingOptions) -> tuple[str, Recognizer]:
    """pyctcdecode's beam search (``options``' beam width and n-gram, its own weights as
    ``recipes.synth.decoders`` chose them) on the network's fp32 output: its name and itself."""
    from recipes.synth.decoders import pyctcdecode_decoder

    decode = pyctcdecode_decoder(model.config.alphabet, options.beam_size, options.lm)

    def run(audio):
        found = dict(log_probs_batch(model, [torch.from_numpy(a) for a in audio]))
        return [decode(found[i]) for i in range(len(audio))]

    return f"pyctcdecode 0.5.0 beam {options.beam_size}" + (" + n-gram" if options.lm else ""), run


def recognizers(model_path: str | None, onnx_dir: Path) -> dict[str, Recognizer]:
    """Every recognizer measured, by name: :func:`variants`, pyctcdecode and PocketSphinx."""
    found, ours = {}, variants(model_path, onnx_dir)
    for name, (network, options, bf16) in ours.items():
        recognize = model_recognizer(network, options)
        found[name] = _in_bf16(recognize) if bf16 else recognize
    # The fp32 network and its beam search's width and LM (the first beam row).
    model, beam = next((net, options) for net, options, _ in ours.values() if options.method == "beam")
    name, found[name] = pyctcdecode_recognizer(model, beam)
    found["PocketSphinx 5.1.1"] = pocketsphinx_recognizer()
    return found


def measure(model_path: str | None, repeats: int) -> dict:
    data = bench_corpus()
    sets = {name: read_cuts(data / f"cuts_{name}.jsonl.gz") for name in TEST_SETS}
    with tempfile.TemporaryDirectory() as tmp:
        ready = recognizers(model_path, Path(tmp))
        speeds = {(name, s): [] for name in ready for s in sets}
        scores = {}
        for _ in range(repeats):
            for name, recognize in ready.items():
                for set_name, cuts in sets.items():
                    result = evaluate(recognize, cuts)
                    speeds[name, set_name].append(result.speed)
                    scores[name, set_name] = (result.wer, result.cer, result.audio_seconds, len(result.ids))
    rows = []
    for (name, set_name), runs in speeds.items():
        wer, cer, seconds, clips = scores[name, set_name]
        rows.append({
            "recognizer": name, "test_set": set_name, "clips": clips, "audio_seconds": round(seconds, 1),
            "wer": round(100 * wer, 2), "cer": round(100 * cer, 2),
            "x_real_time": round(statistics.median(runs), 1), "runs": [round(r, 1) for r in runs],
        })  # fmt: skip
    return {"rows": rows, "repeats": repeats, "model": model_path or "asr/models/default.pt"}


def markdown(result: dict) -> str:
    """One row per recognizer: speed and WER/CER on each test set, speed relative to fp32 greedy."""
    by = {(r["recognizer"], r["test_set"]): r for r in result["rows"]}
    names = list(dict.fromkeys(r["recognizer"] for r in result["rows"]))
    base = {s: by["fp32 greedy", s]["x_real_time"] for s in TEST_SETS}
    head = " | ".join(f"{s}: x real time | vs fp32 greedy | WER % | CER %" for s in TEST_SETS)
    lines = [f"| recognizer | {head} |", "|---|" + "---|" * 4 * len(TEST_SETS)]
    for name in names:
        cells = []
        for s in TEST_SETS:
            r = by[name, s]
            cells += [
                f"{r['x_real_time']:.0f}",
                f"{r['x_real_time'] / base[s]:.2f}",
                f"{r['wer']:.2f}",
                f"{r['cer']:.2f}",
            ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.inference", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", required=True, help="write the result here")
    args = parser.parse_args(argv)
    write_json(measure(args.model, args.repeats), args.json)


if __name__ == "__main__":
    main()
