"""The benchmarks' own arithmetic and plumbing (their figures come from `make bench`)."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from asr.data import read_cuts
from asr.decoding import DecodingOptions, write_beam_defaults
from asr.evaluation import evaluate
from asr.model import RNN_TYPES, ModelConfig, RecurrentCTC, save_model
from asr.onnx import FourierMel
from benchmarks import data, inference, limit, run, scaling
from tests.conftest import TINY

MACHINE = {"cpu": "cpu", "cores": 2, "memory_gb": 1, "avx512_bf16": False, "torch": "x", "torch_threads": 2}

CELLS = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}


@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("subsampling", [1, 3])
def test_flop_count_matches_torch_flop_counter(rnn_type, bidirectional, subsampling):
    config = ModelConfig(**{**TINY.__dict__, "rnn_type": rnn_type, "bidirectional": bidirectional,
                            "subsampling": subsampling})  # fmt: skip
    counted = limit.flops_per_audio_second(config)
    net = copy.deepcopy(RecurrentCTC(config)).eval()
    net.frontend.mel = FourierMel(net.frontend.mel)  # the dense transform the count assumes
    seconds = 20
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.randn(1, 16000 * seconds), torch.tensor([16000 * seconds]))
    # The counter sees convolutions and products; of the RNNs only those torch runs as products
    # (GRU, tanh RNN), not the fused LSTM kernel. The cells below count the RNNs step by step.
    expected = counted["front end"] + counted["convolutions"] + counted["output layer"]
    if _counter_sees(RNN_TYPES[rnn_type]):
        expected += counted["recurrent layers"]
    assert counter.get_total_flops() / seconds == pytest.approx(expected, rel=0.01)
    directions = 2 if bidirectional else 1
    steps = 100 / subsampling * seconds
    measured = 0
    for layer in range(config.num_layers):
        inputs = config.conv_channels if layer == 0 else directions * config.hidden_size
        with FlopCounterMode(display=False) as cell_counter:
            CELLS[rnn_type](inputs, config.hidden_size)(torch.randn(1, inputs))
        measured += cell_counter.get_total_flops() * steps * directions
    assert measured / seconds == pytest.approx(counted["recurrent layers"], rel=1e-6)


def _counter_sees(rnn_class) -> bool:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        rnn_class(8, 8, batch_first=True)(torch.randn(1, 5, 8))
    return counter.get_total_flops() > 0


def test_recording_strings_clips_with_pauses_to_the_exact_length(monkeypatch, corpus):
    monkeypatch.setattr(scaling, "bench_corpus", lambda: Path(corpus["test"]).parent)
    audio = scaling.recording(7.5)
    assert audio.dtype == np.float32 and len(audio) == 7.5 * 16000
    gap = round(16000 * scaling.GAP_SECONDS)
    silent = np.convolve(np.abs(audio) == 0, np.ones(gap), mode="valid") == gap
    assert silent.any()  # a pause between two clips


def test_every_inference_variant_transcribes(corpus, tmp_path):
    torch.manual_seed(0)
    model = RecurrentCTC(TINY)
    model.frontend.fit_stats([(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000]))])
    found = inference.recognizers(str(save_model(model, tmp_path / "model.pt")), tmp_path)
    assert {"fp32 greedy", "bf16 greedy", "int8 greedy", "onnxruntime greedy", "PocketSphinx 5.1.1"} <= set(
        found
    )
    assert any(name.startswith("onnxruntime beam") for name in found)
    assert any(name.startswith("pyctcdecode 0.5.0 beam") for name in found)
    # A model whose default is its beam search: each row still decodes as its name says.
    write_beam_defaults(tmp_path / "model.pt", DecodingOptions(method="beam", beam_size=3))
    for name, (_, options, bf16) in inference.variants(str(tmp_path / "model.pt"), tmp_path).items():
        assert options.method == name.split()[1] and bf16 == name.startswith("bf16"), name
        assert options.method == "greedy" or options.beam_size == 3, name
    cuts = read_cuts(corpus["test"])
    for name, recognize in found.items():
        result = evaluate(recognize, cuts)
        assert len(result.hyps) == len(cuts) and result.speed > 0, name


def test_report_and_chart_show_every_part(tmp_path):
    results = {
        "command": "make bench", "date": "2026-01-01 00:00", "repeats": 3,
        "machine": {"cpu": "cpu", "cores": 2, "memory_gb": 1, "avx512_bf16": True, "torch": "x",
                    "torch_threads": 2},
        "inference": {"rows": [
            {"recognizer": name, "test_set": s, "x_real_time": speed, "wer": 10.0, "cer": 5.0}
            for name, speed in (("fp32 greedy", 400.0), ("fp32 beam 32 + n-gram", 100.0),
                                ("PocketSphinx 5.1.1", 10.0))
            for s in ("test", "test_unseen_voice")
        ]},
        "limit": {"flops_per_audio_second": {"recurrent layers": 3e8}, "total_flops_per_audio_second": 3e8,
                  "matmul_flops_per_second": {"square 2048 fp32": 1.2e11}},
        "scaling": {"rows": [
            {"kind": kind, "size": size, "audio_seconds": size * (3 if kind == "batch" else 1),
             "wall_seconds": size / 100, "x_real_time": 100.0, "peak_rss_mb": 500.0}
            for kind in ("transcribe", "network", "batch") for size in (1, 10)
        ]},
        "serving": {"requests": 48, "clip_seconds": 3.2, "rows": [
            {"batching": "batched", "decoder": "greedy", "clients": 16, "requests_per_second": 20.5,
             "x_real_time": 66.0, "p50_ms": 700.0, "p90_ms": 800.0, "p99_ms": 900.0, "batches": 9},
        ]},
        "startup": {"clip": "clip.flac", "repeats": 5, "rows": [
            {"command": "asr transcribe (beam + LM, default)", "seconds": 1.87, "text": "a cat"}],
            "stages": [["import torch", 0.9], ["beam search built (ARPA LM)", 1.45]]},
    }  # fmt: skip
    text = run.report(results)
    assert "greedy 400x real time" in text and "greedy 40x and beam + LM 10x PocketSphinx's speed" in text
    assert "| fp32 beam 32 + n-gram | 100 | 0.25 |" in text
    assert "120.0 GFLOP/s: 100 % of the fp32 square peak" in text  # 3e8 FLOP x 400
    assert "one recording, transcribed" in text
    assert "| greedy | batched | 16 | 20.5 | 66 | 700 | 800 | 900 | 9 |" in text
    assert (
        "| asr transcribe (beam + LM, default) | 1.87 |" in text
        and "| beam search built (ARPA LM) | 1.450 |" in text
    )
    run.chart(results, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_serving_load_generator_times_every_answer():
    from benchmarks.serving import Server, load
    from tests.test_serve import CLIP

    with Server(None, batch_seconds=240.0) as server:
        figures = load(server, [CLIP.read_bytes()], [3.3], clients=3, requests=6, decoder="greedy")
    assert figures["requests_per_second"] > 0 and figures["x_real_time"] > 0
    assert figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"]
    assert 1 <= figures["batches"] <= 6


def test_the_data_benchmark_runs_tiny_and_reports(corpus, tmp_path):
    out = tmp_path / "data.json"
    data.main(["--sizes", "30", "300", "--clips", "4", "--repeats", "1", "--stats-cuts", corpus["train"],
               "--train-steps", "2", "--json", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    # Every cut of each manifest went through the sampler, each size in its own process, and
    # a training process of 2 updates over each.
    assert [(r["size"], r["cuts"]) for r in result["memory"]] == [(30, 30), (300, 300)]
    assert all(r["peak_rss_mb"] >= r["rss_after_imports_mb"] > 0 for r in result["memory"])
    assert all(r["training_steps"] == 2 and r["training_peak_rss_mb"] > 0 for r in result["memory"])
    read = result["read"]
    assert read["clips"] == 4 and read["files_seconds_per_second"] > 0 and read["shar_seconds_per_second"] > 0
    assert read["ratio_shar_vs_files"] == read["shar_seconds_per_second"] / read["files_seconds_per_second"]
    text = run.report({"command": "c", "date": "d", "repeats": 1, "machine": MACHINE, "data": result})
    assert "- data: the training sampler's peak RSS over 300 cuts" in text and "a training process's" in text
    assert "| 300 | " in text and "| Shar shards | " in text
    # The statistics pass over all 20 clips (speed-perturbed: 0.9-1.1x their length), each
    # number of workers; 0 is the reference.
    clips = sum(cut.duration for cut in read_cuts(corpus["train"]))
    stats = result["stats"]
    assert 0.85 * clips < stats["audio_seconds"] < 1.15 * clips
    assert [r["workers"] for r in stats["rows"]][:2] == [0, 1] and stats["rows"][0]["speedup"] == 1.0
    assert all(r["seconds_per_second"] > 0 for r in stats["rows"]) and "| workers | audio s / s |" in text


def test_the_cluster_estimate_trains_the_gpu_network_briefly_and_scales_it(corpus, tmp_path):
    from benchmarks import cluster

    out = tmp_path / "cluster.json"
    cluster.main(["--cuts", corpus["train"], "--steps", "3", "--batch-seconds", "4", "--json", str(out)])
    result = json.loads(out.read_text())
    assert len(result["rates"]) == 3 and result["audio_seconds_per_second"] == result["rates"][2] > 0
    assert 0 < result["share_of_peak"] == pytest.approx(
        3 * result["forward_flops_per_audio_second"] * result["audio_seconds_per_second"]
        / result["peak_flops_per_second"]
    )  # fmt: skip
    a100, h100 = result["gpus"]["A100 (SXM)"], result["gpus"]["H100 (SXM)"]
    assert h100["audio_seconds_per_second"] / a100["audio_seconds_per_second"] == pytest.approx(989 / 312)
    assert a100["run_hours"] == pytest.approx(30 * a100["epoch_hours"])
    assert a100["epoch_hours"] == pytest.approx(960.6 / (8 * 0.9 * a100["audio_seconds_per_second"]))
    text = run.report({"command": "c", "date": "d", "repeats": 1, "machine": MACHINE, "cluster": result})
    assert "| A100 (SXM) (312 TFLOP/s) |" in text and "an estimate, and a lower bound" in text


def test_the_streaming_benchmark_times_both_kinds_of_stream(monkeypatch, corpus, tmp_path):
    from dataclasses import replace

    from benchmarks import streaming

    for name in ("test", "test_unseen_voice"):
        (tmp_path / f"cuts_{name}.jsonl.gz").symlink_to(corpus["test"])
    monkeypatch.setattr(streaming, "bench_corpus", lambda: tmp_path)
    torch.manual_seed(0)
    uni = save_model(RecurrentCTC(replace(TINY, bidirectional=False)), tmp_path / "uni.pt")
    bi = save_model(RecurrentCTC(TINY), tmp_path / "bi.pt")
    out = tmp_path / "streaming.json"
    streaming.main(["--models", str(uni), str(bi), "--clips", "2", "--json", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(Path(r["model"]).stem, r["mode"], r["test_set"]) for r in rows] == [
        ("uni", "exact", "test"), ("uni", "exact", "test_unseen_voice"),
        ("bi", "window", "test"), ("bi", "window", "test_unseen_voice"),
    ]  # fmt: skip
    assert all(r["clips"] == 2 and r["real_time_factor"] > 0 and r["finish_s"] > 0 for r in rows)
    text = run.report({"command": "c", "date": "d", "repeats": 1, "machine": MACHINE, "streaming": result})
    assert "## Live transcription" in text and f"| {uni} | exact | test | " in text


def test_the_stage_benchmark_times_every_stage_and_shares_add_up(monkeypatch, corpus, tmp_path):
    from benchmarks import stages

    monkeypatch.setattr(stages, "bench_corpus", lambda: Path(corpus["test"]).parent)
    torch.manual_seed(0)
    model = save_model(RecurrentCTC(TINY), tmp_path / "model.pt")
    write_beam_defaults(model, DecodingOptions(method="beam", beam_size=3))
    result = stages.measure(str(model), repeats=1)
    names = [r["stage"] for r in result["rows"]]
    assert names == ["read files (FLAC)", "resample 44.1 -> 16 kHz", "log-mel features", "network",
                     "greedy search", "beam 3 search"]  # fmt: skip
    assert all(r["wall_seconds"] > 0 and r["x_real_time"] > 0 for r in result["rows"])
    for pipeline in result["pipelines"]:
        assert sum(pipeline["shares"].values()) == pytest.approx(100, abs=0.5)
    text = run.report({"command": "c", "date": "d", "repeats": 1, "machine": MACHINE, "stages": result})
    assert "| network | " in text and "| beam 3 | " in text
