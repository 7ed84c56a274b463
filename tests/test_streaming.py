"""asr/streaming.py: chunk by chunk, a unidirectional model gives exactly its offline output;
a bidirectional one re-decodes bounded windows."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from asr.audio import SAMPLE_RATE, load_audio
from asr.decoding import DecodingOptions
from asr.model import RecurrentCTC, save_model
from asr.streaming import Stream
from tests.conftest import TINY


def uni_model(**changes) -> RecurrentCTC:
    torch.manual_seed(0)
    model = RecurrentCTC(replace(TINY, bidirectional=False, **changes)).eval()
    model.frontend.mean.fill_(-6.0)  # statistics as training would set them
    model.frontend.std.fill_(4.0)
    return model


def offline_log_probs(model, audio: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
    return logits[0].log_softmax(-1)


def streamed(model, audio: np.ndarray, sizes: list[int]):
    stream, start, partials = model.stream(), 0, []
    while start < len(audio):
        size = sizes[len(partials) % len(sizes)]
        partials.append(stream.feed(audio[start : start + size]))
        start += size
    return stream, partials, stream.finish()


@pytest.mark.parametrize("subsampling", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "net", [{"rnn_type": "lstm"}, {"rnn_type": "gru"}, {"proj_size": 8}], ids=["lstm", "gru", "lstmp"]
)
def test_streamed_frames_equal_the_offline_ones(speech_wav, subsampling, net):
    model = uni_model(subsampling=subsampling, **net)
    audio = load_audio(speech_wav)
    # Chunks of odd sizes: shorter than a window, a hop, or many frames.
    stream, _, final = streamed(model, audio, [37, 160, 401, 3200, 999])
    torch.testing.assert_close(
        torch.cat(stream.log_probs), offline_log_probs(model, audio), atol=1e-4, rtol=1e-4
    )
    assert final == model.transcribe(audio, SAMPLE_RATE)


def test_partial_text_grows_into_the_final_text(speech_wav):
    model = uni_model()
    audio = load_audio(speech_wav)
    _, partials, final = streamed(model, audio, [int(0.2 * SAMPLE_RATE)])
    assert partials[-1].duration == pytest.approx(len(audio) / SAMPLE_RATE, abs=1e-3)
    lengths = [len(p.words) for p in partials]
    assert lengths == sorted(lengths)  # greedy partials only ever add words (the last may still grow)
    assert final.text.startswith(" ".join(w.text for w in partials[-1].words[:-1]))


@pytest.mark.parametrize("samples", [0, 100, 400])
def test_very_short_streams_match_offline(samples):
    model = uni_model()
    audio = np.random.default_rng(0).normal(0, 0.1, samples).astype(np.float32)
    stream = model.stream()
    stream.feed(audio)
    final = stream.finish()
    if samples:
        assert final == model.transcribe(audio, SAMPLE_RATE)
    else:
        assert final.text == "" and final.duration == 0


def test_streams_at_other_rates_are_resampled(speech_wav):
    model = uni_model()
    audio = load_audio(speech_wav)
    import soxr

    at_8k = soxr.resample(audio, SAMPLE_RATE, 8000)
    stream = model.stream(sample_rate=8000)
    for start in range(0, len(at_8k), 800):
        stream.feed(at_8k[start : start + 800])
    assert stream.finish().duration == pytest.approx(len(audio) / SAMPLE_RATE, abs=0.01)


def test_a_bidirectional_model_cannot_stream_and_a_finished_stream_takes_no_more():
    with pytest.raises(ValueError, match="unidirectional"):
        RecurrentCTC(TINY).stream()
    with pytest.raises(ValueError, match="feature_norm: global"):
        uni_model(feature_norm="utterance").stream()
    stream = uni_model().stream()
    stream.finish()
    with pytest.raises(ValueError, match="finished"):
        stream.feed(np.zeros(160, dtype=np.float32))


def test_stream_command_prints_growing_text_and_the_final_line(speech_wav, tmp_path):
    from tests.test_cli import run_asr

    model = save_model(uni_model(), tmp_path / "uni.pt")
    out = run_asr("stream", speech_wav, "--model", str(model), "--chunk-ms", "100")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1].startswith("final: ") and all(line.startswith("[") for line in lines[:-1])


@pytest.fixture(scope="module")
def sentences(speech_wav) -> np.ndarray:
    """25 s of one sentence said 9 times, half a second of silence after each."""
    audio = load_audio(speech_wav)
    return np.concatenate([audio, np.zeros(SAMPLE_RATE // 2, dtype=np.float32)] * 9)


def test_a_window_stream_decodes_bounded_windows_and_each_stretch_once_for_the_final_text(sentences):
    from asr.model import load_model
    from asr.streaming import GREEDY, WindowStream, open_stream

    model = load_model()  # the shipped model: bidirectional
    stream = open_stream(model, options=GREEDY)
    assert isinstance(stream, WindowStream) and stream.mode == "window"
    decoded = []  # (samples, final?) of every decoding
    transcribe = model.transcribe

    def counting(audio, sample_rate, options):
        decoded.append((len(audio), options is stream.options and options is not GREEDY))
        return transcribe(audio, sample_rate, options)

    stream.options = DecodingOptions(method="greedy", beam_size=2)  # final: greedy, but its own object
    model.transcribe = counting
    try:
        partials = [stream.feed(sentences[i : i + 3200]) for i in range(0, len(sentences), 3200)]
        final = stream.finish()
    finally:
        del model.transcribe
    window = (stream.window + stream.cadence) * SAMPLE_RATE
    assert all(n <= window for n, _ in decoded), "no decoding reads more than one window"
    assert sum(n for n, last in decoded if last) == len(sentences), (
        "each sample decoded once for the final text"
    )
    assert sum(1 for _, last in decoded if last) >= 3, "committed stretches as the stream went"
    # Cut in pauses, the stretches say what the whole clip says, but for the spellings that are
    # a close call (each stretch's features lose its own mean): 8 % of the characters with the
    # shipped models on this garbled espeak clip (under 5 % with an earlier one), and a close
    # call can split a word ("attest", "a test"): 48 words against 50 with the current one.
    from torchmetrics.functional.text import char_error_rate

    offline = model.transcribe(sentences, SAMPLE_RATE, GREEDY).text
    assert abs(len(final.words) - len(offline.split())) <= 0.05 * len(offline.split())
    assert char_error_rate(final.text, offline) <= 0.12
    assert final.duration == pytest.approx(len(sentences) / SAMPLE_RATE, abs=1e-3)
    starts = [w.start for w in final.words]
    assert starts == sorted(starts) and final.words[-1].end <= final.duration + 0.1
    assert len(partials[-1].words) >= len(final.words) - 2  # partials keep up with the stream


def test_a_finished_window_stream_takes_no_more():
    from asr.streaming import WindowStream, open_stream

    model = RecurrentCTC(TINY).eval()
    stream = open_stream(model)
    assert isinstance(stream, WindowStream)
    assert isinstance(open_stream(uni_model()), Stream)
    assert stream.finish().text == "" and stream.finish().duration == 0
    with pytest.raises(ValueError, match="finished"):
        stream.feed(np.zeros(160, dtype=np.float32))
    with pytest.raises(ValueError, match="keep < window"):
        WindowStream(model, window=2, keep=3)
