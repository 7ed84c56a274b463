import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import asr.audio
import asr.model
from asr.model import ModelConfig, ModelFileError, RecurrentCTC, load_model, reverse_padded, save_model
from tests.conftest import TINY


def _model(**overrides) -> RecurrentCTC:
    torch.manual_seed(0)
    return RecurrentCTC(ModelConfig(**{**TINY.__dict__, **overrides})).eval()


@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("subsampling", [1, 2, 3, 4])
def test_output_shape_and_lengths(rnn_type, subsampling):
    model = _model(rnn_type=rnn_type, subsampling=subsampling)
    audio, lens = torch.randn(3, 16000), torch.tensor([16000, 12345, 800])
    logits, out_lens = model(audio, lens)
    frames = model.frontend.num_frames(lens)
    assert out_lens.tolist() == [-(-int(f) // subsampling) for f in frames]
    assert logits.shape == (3, int(out_lens.max()), len(model.tokenizer))


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_padding_does_not_change_results(rnn_type, bidirectional):
    model = _model(rnn_type=rnn_type, bidirectional=bidirectional)
    audio = torch.randn(2, 24000)
    lens = torch.tensor([24000, 9000])
    with torch.no_grad():
        batched, out_lens = model(audio, lens)
        alone, alone_lens = model(audio[1:, :9000], lens[1:])
    assert out_lens[1] == alone_lens[0]
    torch.testing.assert_close(batched[1, : out_lens[1]], alone[0], atol=1e-5, rtol=1e-4)


def test_lstmp_projects_each_direction_and_stays_exact_under_padding():
    # LSTMP (Sak et al. 2014): the recurrence and the next layer see the projection, not the cell.
    model = _model(hidden_size=32, proj_size=12)
    assert model.head.in_features == 2 * 12
    assert model.layers[0].forward_rnn.weight_hh_l0.shape == (4 * 32, 12)
    audio, lens = torch.randn(2, 24000), torch.tensor([24000, 9000])
    with torch.no_grad():
        batched, out_lens = model(audio, lens)
        alone, _ = model(audio[1:, :9000], lens[1:])
    torch.testing.assert_close(batched[1, : out_lens[1]], alone[0], atol=1e-5, rtol=1e-4)


def test_reverse_padded_keeps_padding_in_place():
    x = torch.arange(10.0).view(2, 5, 1)
    out = reverse_padded(x, torch.tensor([5, 3]))
    assert out[:, :, 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]


def test_bidirectional_doubles_layer_width():
    assert _model(bidirectional=True).head.in_features == 2 * _model(bidirectional=False).head.in_features


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"subsampling": 5}, "subsampling"),
        ({"rnn_type": "transformer"}, "rnn_type"),
        ({"feature_norm": "cepstral"}, "feature_norm"),
        ({"rnn_type": "gru", "proj_size": 64}, "proj_size"),
        ({"hidden_size": 64, "proj_size": 64}, "proj_size"),
    ],
    ids=["subsampling", "rnn_type", "feature_norm", "proj_size-gru", "proj_size-too-wide"],
)
def test_invalid_config_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**fields)


def test_save_and_load_round_trip(tmp_path):
    model = _model(rnn_type="gru")
    model.frontend.mean.fill_(1.5)  # statistics travel with the weights
    path = save_model(model, tmp_path / "m.pt")
    loaded = load_model(path)
    assert loaded.config == model.config
    assert not loaded.training
    audio, lens = torch.randn(1, 8000), torch.tensor([8000])
    with torch.no_grad():
        # float16 storage of the weights: outputs agree closely, parameters are float32 again.
        torch.testing.assert_close(loaded(audio, lens)[0], model(audio, lens)[0], atol=2e-2, rtol=1e-2)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert float(loaded.frontend.mean[0]) == 1.5


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = save_model(_model(), tmp_path / "m.pt")
    before = path.read_bytes()

    def broken_save(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(_model(hidden_size=32), path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a model file"),
        (b"hello, not a model", "not a model file"),
    ],
    ids=["empty", "text"],
)
def test_load_rejects_files_that_are_not_models(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message) as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_load_rejects_foreign_torch_files_and_checkpoints(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a model file"):
        load_model(tmp_path / "other.pt")
    torch.save({"state_dict": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(ModelFileError, match="asr export"):
        load_model(tmp_path / "ckpt.pt")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.pt")


def test_inference_path_does_not_import_lightning(untrained_model_file, speech_wav):
    code = (
        "import sys, asr; m = asr.load_model(sys.argv[1]); m.transcribe(sys.argv[2]); "
        "print(sorted(k for k in sys.modules if k.split('.')[0] in ('lightning', 'pytorch_lightning')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, untrained_model_file, speech_wav],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_transcribe_batch_matches_single_and_restores_training_mode(untrained_model_file, speech_wav):
    model = load_model(untrained_model_file).train()
    short = torch.randn(4000)
    single = [model.transcribe(speech_wav), model.transcribe(short, sample_rate=16000)]
    batch = model.transcribe_batch([speech_wav, short], sample_rate=16000)
    assert [r.text for r in batch] == [r.text for r in single]
    assert batch[1].duration == 0.25
    assert model.training


def test_transcribe_batch_returns_the_error_of_a_bad_input_in_its_place(
    untrained_model_file, speech_wav, tmp_path
):
    from asr.audio import AudioError

    model = load_model(untrained_model_file)
    missing = str(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="missing.wav"):
        model.transcribe_batch([speech_wav, missing])
    good, bad, again = model.transcribe_batch([speech_wav, missing, speech_wav], return_exceptions=True)
    assert isinstance(bad, AudioError) and missing in str(bad)
    assert good.text == again.text == model.transcribe(speech_wav).text


def test_files_are_read_a_group_at_a_time(untrained_model_file, speech_wav, tmp_path, monkeypatch):
    from asr import inference
    from asr.audio import AudioError

    model = load_model(untrained_model_file)
    reads = []
    read = lambda path, rate=None: reads.append(path) or asr.audio.load_audio(path, rate)  # noqa: E731
    monkeypatch.setattr(inference, "load_audio", read)
    monkeypatch.setattr(inference, "MAX_BATCH_SECONDS", 1.0)  # the clip is longer: one file per group
    missing = str(tmp_path / "missing.wav")
    results = inference.transcribe_files(model, iter([speech_wav, missing, speech_wav, speech_wav]))
    path, first = next(results)
    assert (path, len(reads)) == (speech_wav, 1)  # the other files are not read yet
    rest = list(results)
    assert [p for p, _ in rest] == [missing, speech_wav, speech_wav]
    assert isinstance(rest[0][1], AudioError)
    assert [r.text for _, r in rest[1:]] == [first.text] * 2


def test_beam_transcribe_batch_matches_one_by_one_across_pieces(untrained_model_file):
    from asr.decoding import DecodingOptions

    model = load_model(untrained_model_file)
    options = DecodingOptions(method="beam", beam_size=4)
    torch.manual_seed(1)
    # Two inputs over 30 s (cut into pieces) and short ones, sharing batches.
    inputs = [torch.randn(16000 * n) * 0.3 for n in (45, 1, 3, 35, 2)]
    batch = model.transcribe_batch(inputs, sample_rate=16000, options=options)
    for audio, result in zip(inputs, batch, strict=True):
        alone = model.transcribe(audio, sample_rate=16000, options=options)
        assert result.text == alone.text and result.words == alone.words


def test_a_beam_search_is_built_once_for_every_transcription_with_it(untrained_model_file, monkeypatch):
    from asr import inference
    from asr.decoding import DecodingOptions

    built = []
    monkeypatch.setattr(inference, "BeamSearch", lambda *args: built.append(args) or (lambda x: [[]]))
    inference.get_decoder.cache_clear()
    model = load_model(untrained_model_file)
    model.beam_options = DecodingOptions(method="beam", beam_size=3)  # as a tuned model has
    for _ in range(3):
        assert model.transcribe(torch.zeros(16000), sample_rate=16000).text == ""
    assert len(built) == 1 and built[0][0] == model.beam_options  # the model's own, built once
    inference.get_decoder.cache_clear()


def test_bf16_precision_runs_the_network_in_bfloat16_with_close_results(untrained_model_file, speech_wav):
    from asr.audio import load_audio
    from asr.inference import log_probs_batch

    wave = torch.from_numpy(load_audio(speech_wav))
    fp32 = dict(log_probs_batch(load_model(untrained_model_file), [wave]))[0]
    bf16_model = load_model(untrained_model_file, precision="bf16")
    assert bf16_model.precision == "bf16"
    bf16 = dict(log_probs_batch(bf16_model, [wave]))[0]
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    assert not torch.equal(bf16, fp32)  # it did run in another precision
    torch.testing.assert_close(bf16, fp32, atol=0.1, rtol=0.05)
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16"):
        load_model(untrained_model_file, precision="fp16")


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_it_warns_that_it_is_emulated(untrained_model_file, monkeypatch, native):
    monkeypatch.setattr(asr.model, "native_bf16_cpu", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(untrained_model_file, precision="bf16")
        load_model(untrained_model_file)  # fp32: never a warning
    emulated = [str(w.message) for w in caught if "emulated" in str(w.message)]
    assert len(emulated) == (0 if native else 1)
