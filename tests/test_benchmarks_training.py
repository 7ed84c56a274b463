"""The training benchmark: the reference model, our RNNs packed, and a whole run on a tiny corpus."""

import json

import pytest
import torch
from torch import nn

from asr.model import ModelConfig, RecurrentCTC
from benchmarks import training
from benchmarks.reference import DeepSpeech, collate, spectrogram, train_step


def test_reference_output_lengths_follow_its_conv_arithmetic():
    model = DeepSpeech(hidden_size=32, num_layers=2).eval()
    samples = [torch.randn(n) for n in (16000, 12000, 4000, 1000)]
    batch = collate([(spectrogram(s), torch.tensor([1, 2]), len(s) / 16000) for s in samples])
    assert batch["inputs"].shape == (4, 1, 161, 101)
    assert batch["lengths"].tolist() == [1 + len(s) // 160 for s in samples]
    with torch.no_grad():
        logits, lens = model(batch["inputs"], batch["lengths"])
        alone, _ = model(batch["inputs"][2:3, :, :, : batch["lengths"][2]], batch["lengths"][2:3])
    # One time stride of 2, kernels padded to keep their centre: ceil(T / 2) frames.
    assert lens.tolist() == [(n - 1) // 2 + 1 for n in batch["lengths"].tolist()]
    assert logits.shape == (lens[0], 4, 29)
    # Masking: padding changes nothing of an utterance's own frames.
    torch.testing.assert_close(logits[: lens[2], 2], alone[:, 0], atol=1e-4, rtol=0)


def test_reference_ctc_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = DeepSpeech(hidden_size=32, num_layers=2).train()
    batch = collate([(spectrogram(torch.randn(n)), torch.randint(1, 29, (4,)), 0.0) for n in (4800, 4000)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctc = nn.CTCLoss(reduction="sum", zero_infinity=True)
    losses = [train_step(model, optimizer, ctc, batch) for _ in range(8)]
    assert losses[-1] < 0.9 * losses[0], losses


@pytest.mark.parametrize("bidirectional", [True, False])
def test_packed_rnns_give_the_padded_outputs(bidirectional):
    torch.manual_seed(0)
    config = ModelConfig(
        n_mels=40, conv_channels=64, hidden_size=64, num_layers=2, bidirectional=bidirectional
    )
    net = RecurrentCTC(config).eval()
    audio, lens = torch.randn(3, 16000), torch.tensor([16000, 11000, 5000])
    with torch.no_grad():
        padded, frames = net(audio, lens)
        training.pack_rnns(net)
        packed, _ = net(audio, lens)
    assert all(type(layer) is training.PackedRecurrentLayer for layer in net.layers)
    for i, n in enumerate(frames.tolist()):
        torch.testing.assert_close(packed[i, :n], padded[i, :n], atol=1e-5, rtol=0)


def test_training_benchmark_runs_end_to_end(corpus, tmp_path):
    out = tmp_path / "training.json"
    names = [training.OURS, training.REFERENCE]
    training.main(
        ["--cuts", corpus["train"], "--audio-seconds", "20", "--reference-audio-seconds", "10"]
        + ["--warmup-batches", "1", "--repeats", "1", "--only", *names, "--json", str(out)]
    )
    result = json.loads(out.read_text())
    assert [row["name"] for row in result["rows"]] == names
    for row in result["rows"]:
        assert row["audio_seconds_per_second"] > 0 and row["peak_rss_mb"] > 0 and row["parameters"] > 0
        assert row["runs"][0]["audio_seconds"] >= (10 if row["name"] == training.REFERENCE else 20)
    assert result["ratio_vs_reference"] > 0


def test_markdown_has_a_line_for_every_row():
    rows = [
        {"name": r.name, "audio_seconds_per_second": 10.0 + i, "runs": [], "peak_rss_mb": 900.0,
         "parameters": 4_800_000, "notes": r.notes}
        for i, r in enumerate(training.ROWS)
    ]  # fmt: skip
    settings = {"cuts": "cuts.jsonl.gz", "repeats": 3, "audio_seconds": 600.0}
    settings |= {"reference_audio_seconds": 300.0, "warmup_batches": 2}
    table = training.markdown({"rows": rows, "ratio_vs_reference": 0.6, "settings": settings})
    for row in training.ROWS:
        assert f"| {row.name} |" in table
    assert len(table.splitlines()) == 4 + len(rows)
