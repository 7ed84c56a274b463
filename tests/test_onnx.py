import pytest
import torch

from asr.cli import main
from asr.model import ModelConfig, ModelFileError, RecurrentCTC, load_model, save_model
from asr.onnx import FourierMel, export_onnx
from tests.conftest import TINY


@pytest.fixture(
    scope="module",
    params=[{}, {"feature_norm": "utterance_mvn"}],
    ids=["global-norm", "utterance-mvn"],
)
def model_file(tmp_path_factory, request) -> str:
    """A model with random weights and set feature statistics (export refuses untrained ones)."""
    torch.manual_seed(0)
    model = RecurrentCTC(ModelConfig(**{**TINY.__dict__, "subsampling": 3, **request.param}))
    model.frontend.fit_stats([(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000]))])
    return str(save_model(model, tmp_path_factory.mktemp("model") / "model.pt"))


@pytest.fixture(scope="module")
def onnx_file(model_file, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert main(["export", model_file, str(out), "--format", "onnx"]) == 0
    return str(out)


def test_fourier_mel_equals_torchaudio():
    mel = RecurrentCTC(TINY).frontend.mel
    audio = torch.randn(3, 7000)
    expected = mel(audio)
    torch.testing.assert_close(FourierMel(mel)(audio), expected, rtol=1e-4, atol=1e-4 * expected.max().item())


def test_onnx_logits_equal_torch_for_any_batch(model_file, onnx_file):
    torch_model, onnx_model = load_model(model_file), load_model(onnx_file)
    assert onnx_model.config == torch_model.config
    # Batch and lengths other than the export example's, one shorter than an analysis window.
    audio = torch.randn(3, 30000) * 0.1
    lens = torch.tensor([30000, 12345, 200])
    with torch.no_grad():
        expected, expected_lens = torch_model(audio, lens)
    logits, out_lens = onnx_model(audio, lens)
    assert out_lens.tolist() == expected_lens.tolist()
    for row, n in enumerate(expected_lens.tolist()):
        torch.testing.assert_close(logits[row, :n], expected[row, :n], rtol=1e-3, atol=1e-3)


def test_onnx_model_transcribes_like_the_torch_model(model_file, onnx_file, speech_wav):
    torch_model, onnx_model = load_model(model_file), load_model(onnx_file)
    expected = torch_model.transcribe(speech_wav)
    result = onnx_model.transcribe(speech_wav)
    assert result.text == expected.text
    assert [w.start for w in result.words] == [w.start for w in expected.words]


def test_transcribe_cli_takes_an_onnx_model(onnx_file, speech_wav, capsys):
    assert main(["transcribe", speech_wav, "--model", onnx_file, "--format", "json"]) == 0
    assert '"duration"' in capsys.readouterr().out


def test_interrupted_export_keeps_the_previous_file(model_file, onnx_file, tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(open(onnx_file, "rb").read())
    before = path.read_bytes()

    def broken_export(*args, **kwargs):
        open(args[2], "wb").write(b"partial")
        raise RuntimeError("killed")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="killed"):
        export_onnx(load_model(model_file), path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_files_that_are_not_our_onnx_models_are_refused(tmp_path):
    import onnx

    (tmp_path / "text.onnx").write_text("not a graph")
    with pytest.raises(ModelFileError, match="text.onnx: not an ONNX model"):
        load_model(tmp_path / "text.onnx")
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [value("x", onnx.TensorProto.FLOAT, [1])], [value("y", onnx.TensorProto.FLOAT, [1])]
    )
    foreign = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(foreign, tmp_path / "other.onnx")
    with pytest.raises(ModelFileError, match="other.onnx: an ONNX model, but not one exported"):
        load_model(tmp_path / "other.onnx")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.onnx")


def test_export_refuses_a_model_without_feature_statistics(untrained_model_file, tmp_path, capsys):
    assert main(["export", untrained_model_file, str(tmp_path / "m.onnx"), "--format", "onnx"]) == 1
    assert "feature statistics were never computed" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_lstmp_export_is_refused_before_anything_is_written(tmp_path, capsys):
    model = RecurrentCTC(ModelConfig(**{**TINY.__dict__, "proj_size": 16}))
    model.frontend.fit_stats([(torch.randn(1, 16000) * 0.1, torch.tensor([16000]))])
    path = save_model(model, tmp_path / "lstmp.pt")
    assert main(["export", str(path), str(tmp_path / "lstmp.onnx")]) == 1
    assert "projection" in capsys.readouterr().err
    assert not (tmp_path / "lstmp.onnx").exists()


def test_onnx_models_run_in_fp32_only(onnx_file):
    with pytest.raises(ValueError, match="runs in fp32 only"):
        load_model(onnx_file, precision="bf16")
