"""How far from the hardware: the model's FLOPs per audio second, counted layer by layer, and
the machine's measured matrix-multiply peak, in fp32 and bf16, for a large square product and
for the small product one recurrent step makes.

    python -m benchmarks.limit [--model M] --json OUT
"""

import argparse
import statistics
import time

import torch

from asr.model import ModelConfig, load_model
from benchmarks.common import write_json

GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # weight matrices per RNN layer: one per gate


def flops_per_audio_second(config: ModelConfig) -> dict[str, float]:
    """Multiply-adds x 2 of one second of audio through each part of the network.

    The front end is counted as the dense Fourier transform the ONNX graph computes (torch's
    FFT does about 20x fewer); element-wise work (activations, norms, gates' products) is left
    out: it is a few percent of the products.
    """
    frames = 1000 / config.hop_ms  # log-mel frames per second
    steps = frames / config.subsampling  # RNN steps per second
    n_fft = round(16 * config.win_ms)  # samples per window at 16 kHz
    bins = n_fft // 2 + 1
    kernel = 2 * config.subsampling + 1 if config.subsampling > 1 else 3
    directions = 2 if config.bidirectional else 1
    h, c = config.hidden_size, config.conv_channels
    rnn = 0.0
    for layer in range(config.num_layers):
        inputs = c if layer == 0 else directions * h
        rnn += 2 * GATES[config.rnn_type] * h * (inputs + h) * directions * steps
    return {
        "front end": 2 * frames * (2 * bins * n_fft + bins * config.n_mels),
        "convolutions": 2 * frames * config.n_mels * c * 5 + 2 * steps * c * c * kernel,
        "recurrent layers": rnn,
        "output layer": 2 * steps * directions * h * (len(config.alphabet) + 1),
    }


def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 7) -> float:
    """FLOP/s of (m, k) x (k, n) products in ``dtype``, the median of ``repeats`` timed batches."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    calls = max(1, int(2e9 // (2 * m * k * n)))  # about 2 GFLOP per timed batch
    torch.mm(a, b)  # warm-up: oneDNN picks its kernel
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            torch.mm(a, b)
        rates.append(2 * m * k * n * calls / (time.perf_counter() - started))
    return statistics.median(rates)


def measure(model_path: str | None) -> dict:
    config = load_model(model_path).config
    parts = flops_per_audio_second(config)
    h = config.hidden_size
    step = (32, h, GATES[config.rnn_type] * h)  # one recurrent step of a 32-utterance batch
    square = (2048, 2048, 2048)
    peaks = {
        f"{name} {dtype_name}": matmul_rate(*shape, dtype)
        for name, shape in (("square 2048", square), (f"recurrent step {step}", step))
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    return {
        "flops_per_audio_second": parts,
        "total_flops_per_audio_second": sum(parts.values()),
        "matmul_flops_per_second": peaks,
    }


def markdown(result: dict, greedy_speed: float | None = None) -> str:
    """The FLOP count per part, the measured peaks, and (given the model's measured x real
    time) the FLOP/s it achieves and what share of the fp32 peak that is."""
    total = result["total_flops_per_audio_second"]
    lines = ["| part | MFLOP per audio second | share |", "|---|---|---|"]
    for part, flops in result["flops_per_audio_second"].items():
        lines.append(f"| {part} | {flops / 1e6:.1f} | {100 * flops / total:.0f} % |")
    lines += [f"| total | {total / 1e6:.1f} | |", "", "| matrix product | GFLOP/s |", "|---|---|"]
    lines += [f"| {name} | {rate / 1e9:.1f} |" for name, rate in result["matmul_flops_per_second"].items()]
    if greedy_speed:
        achieved = total * greedy_speed
        peak = result["matmul_flops_per_second"]["square 2048 fp32"]
        share = 100 * achieved / peak
        lines += ["", f"At {greedy_speed:.0f}x real time (fp32 greedy) the model computes "
                  f"{achieved / 1e9:.1f} GFLOP/s: {share:.0f} % of the fp32 square peak."]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limit", description=__doc__.split(":")[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--json", required=True, help="write the result here")
    args = parser.parse_args(argv)
    write_json(measure(args.model), args.json)


if __name__ == "__main__":
    main()
