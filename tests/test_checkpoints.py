"""asr/checkpoints.py: the network of a checkpoint, export, and averaging checkpoints (asr average)."""

import subprocess
import sys

import pytest
import torch

from asr.checkpoints import average
from asr.cli import main
from asr.model import ModelConfig, RecurrentCTC, load_model, save_model
from tests.conftest import TINY


def _model_file(path, seed: int, **changes):
    torch.manual_seed(seed)
    model = RecurrentCTC(ModelConfig(**{**TINY.__dict__, **changes}))
    model.frontend.fit_stats([(torch.randn(2, 16000) * (0.1 + seed), torch.tensor([16000, 9000]))])
    return save_model(model, path)


def test_the_average_is_the_mean_of_every_weight_and_statistic(tmp_path):
    paths = [_model_file(tmp_path / f"{seed}.pt", seed) for seed in range(3)]
    models = [load_model(p) for p in paths]
    mean = average(paths)
    for name, value in mean.state_dict().items():
        if value.is_floating_point():
            expected = torch.stack([m.state_dict()[name] for m in models]).mean(0)
            torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-6)
    assert not torch.equal(mean.frontend.mean, models[0].frontend.mean)  # statistics averaged too
    assert torch.equal(average(paths[:1]).head.weight, models[0].head.weight)


def test_networks_that_differ_are_refused_by_name(tmp_path):
    a, b = _model_file(tmp_path / "a.pt", 0), _model_file(tmp_path / "b.pt", 1, hidden_size=32)
    with pytest.raises(
        ValueError, match=r"b.pt: not the network of the others \(hidden_size: 64 in .*a.pt, 32 here\)"
    ):
        average([a, b])
    assert main(["average", str(a), str(tmp_path / "missing.pt"), "-o", str(tmp_path / "c.pt")]) == 1
    assert not (tmp_path / "c.pt").exists()


def test_average_command_writes_a_model_file_or_onnx_without_lightning(tmp_path):
    a, b = _model_file(tmp_path / "a.pt", 0), _model_file(tmp_path / "b.pt", 1)
    out = tmp_path / "mean.pt"
    code = (
        "import sys; from asr.cli import main; "
        f"assert main(['average', {str(a)!r}, {str(b)!r}, '-o', {str(out)!r}]) == 0; "
        "assert 'lightning' not in sys.modules, 'average imported Lightning'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    torch.testing.assert_close(load_model(out).head.weight, average([a, b]).head.weight, rtol=1e-3, atol=1e-3)
    assert main(["average", str(a), str(b), "-o", str(tmp_path / "mean.onnx")]) == 0
    assert load_model(tmp_path / "mean.onnx").config == load_model(out).config
