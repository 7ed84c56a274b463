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


def streamed(model, audio: np.ndarray, sizes: list[int], pause: float | None = None):
    """Stream ``audio`` in chunks of ``sizes`` (in turn): the stream (with ``stream.frames_seen``,
    every output frame it made), its partial results and its final one."""
    stream, start, partials = model.stream(pause=pause), 0, []
    stream.frames_seen, extend = [], stream._extend_path
    stream._extend_path = lambda log_probs: (stream.frames_seen.append(log_probs), extend(log_probs))
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
        torch.cat(stream.frames_seen), offline_log_probs(model, audio), atol=1e-4, rtol=1e-4
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
    assert lines[-1].startswith("final: ") and all(line.startswith(("[", "final: ")) for line in lines)
    finals = " ".join(line.removeprefix("final: ") for line in lines if line.startswith("final: "))
    assert finals == uni_model().transcribe(load_audio(speech_wav), SAMPLE_RATE).text


def _stream_stdin(model, data: bytes, *args):
    import subprocess
    import sys

    command = [sys.executable, "-m", "asr.cli", "stream", "-", "--model", str(model), *args]
    return subprocess.run(command, input=data, capture_output=True)


def test_stream_command_reads_raw_audio_from_stdin(speech_wav, tmp_path):
    import soxr

    model = save_model(uni_model(), tmp_path / "uni.pt")
    audio = load_audio(speech_wav)
    at_8k = soxr.resample(audio, SAMPLE_RATE, 8000)
    pcm = (np.clip(at_8k, -1, 1) * 32767).astype("<i2").tobytes()
    out = _stream_stdin(model, pcm, "--sample-rate", "8000", "--chunk-ms", "100")
    assert out.returncode == 0, out.stderr.decode()
    floats = _stream_stdin(model, at_8k.astype("<f4").tobytes(), "--sample-rate", "8000", "--encoding", "f32")
    # The same audio in either encoding gives the same text (16-bit rounding aside).
    last = [o.stdout.decode().splitlines()[-1] for o in (out, floats)]
    assert last[0].startswith("final: ") and last[0] == last[1]


@pytest.mark.parametrize(
    "data, args, message",
    [
        (b"\x01\x02\x03", [], "stdin: the audio ends inside a sample (1 bytes of a 2-byte pcm16 one)"),
        (np.full(800, 20000, "<i2").tobytes(), ["--encoding", "f32"], "is it 16-bit PCM"),
        (np.full(800, np.nan, "<f4").tobytes(), ["--encoding", "f32"], "stdin: audio holds NaN"),
        (b"", ["--sample-rate", "1000"], "sample rate 1000: a stream takes 8000 to 192000 Hz"),
    ],
    ids=["half a sample", "pcm16 read as f32", "nan", "rate"],
)
def test_stream_command_names_bad_raw_audio_in_one_line(tmp_path, data, args, message):
    model = save_model(uni_model(), tmp_path / "uni.pt")
    out = _stream_stdin(model, data, *args)
    errors = out.stderr.decode().strip().splitlines()
    assert out.returncode != 0 and len(errors) == 1 and message in errors[0], errors


def test_stream_command_without_a_microphone_says_so_in_one_line(tmp_path):
    from tests.test_cli import run_asr

    model = save_model(uni_model(), tmp_path / "uni.pt")
    out = run_asr("stream", "--mic", "--model", str(model))
    errors = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(errors) == 1, out.stderr
    # The build machines have sounddevice and PortAudio but no sound card.
    assert "no microphone found" in errors[0]
    out = run_asr("stream", "--model", str(model))
    assert out.returncode != 0 and "give one source" in out.stderr


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
    # call can split or join a word ("hel low", "whellow"): 52 words against 55 with the current
    # one. A stretch lost or decoded twice would change the count by a whole sentence.
    from torchmetrics.functional.text import char_error_rate

    offline = model.transcribe(sentences, SAMPLE_RATE, GREEDY).text
    words_a_sentence = len(offline.split()) / 9
    assert abs(len(final.words) - len(offline.split())) < words_a_sentence
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


def spoken_frames(model, text: str, pause_frames: int) -> torch.Tensor:
    """Log-probabilities (T, V) of an utterance that says each character of ``text`` for two
    frames, a blank frame between characters, and ``pause_frames`` blanks for each "|"."""
    tokenizer, path = model.tokenizer, []
    for char in text:
        if char == "|":
            path += [tokenizer.blank_id] * pause_frames
        else:
            token = tokenizer.space_id if char == " " else tokenizer.encode(char)[0]
            path += [token] * 2 + [tokenizer.blank_id]
    logits = torch.full((len(path), len(tokenizer)), -8.0)
    logits[torch.arange(len(path)), torch.tensor(path)] = 0.0
    return logits.log_softmax(-1)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_a_stream_makes_each_stretch_final_at_a_pause_and_keeps_only_the_current_one(method):
    from asr.decoding import greedy_decode

    model = uni_model()
    pause = 0.3
    pause_frames = round(pause / model.config.frame_shift)
    log_probs = spoken_frames(model, "|hello world |good day to you ||bye|", pause_frames + 2)
    options = DecodingOptions(method=method, beam_size=8)
    stream = model.stream(options=options, pause=pause)
    committed, held = [], []
    for start in range(0, len(log_probs), 3):  # 3 output frames a chunk: about 100 ms
        stream._take(log_probs[start : start + 3])
        committed.append(len(stream.committed))
        held.append(sum(len(x) for x in stream.log_probs))
    stream.finished = True
    final = stream._transcription(final=True)
    # Final at each pause, not only at the end, and the same words and times as the whole
    # utterance decoded at once (where a space ends the word before each pause: a stream
    # always ends a word there, greedy decoding of the whole only at a space).
    assert sorted(set(committed)) == [0, 2, 6, 7]
    whole = greedy_decode(log_probs, model.tokenizer, model.config.frame_shift)
    assert [(w.text, w.start, w.end) for w in final.words] == [(w.text, w.start, w.end) for w in whole]
    # Memory holds the stretch being said, never the stream: at most "good day to you" and a pause.
    assert max(held) <= len(spoken_frames(model, "good day to you |", pause_frames + 2)) + 3
    assert held[-1] == 0  # the trailing silence left memory too


def test_partial_text_is_the_committed_words_then_the_greedy_path_of_the_current_stretch():
    model = uni_model()
    pause_frames = round(0.3 / model.config.frame_shift)
    log_probs = spoken_frames(model, "one two|||three fo", pause_frames)
    stream = model.stream(options=DecodingOptions(), pause=0.3)
    partials = []
    for start in range(0, len(log_probs), 2):
        stream._take(log_probs[start : start + 2])
        partials.append(stream._transcription(final=False).text)
    assert partials[-1] == "one two three fo" and len(stream.committed) == 2
    assert all(b.startswith(a.rsplit(" ", 1)[0]) for a, b in zip(partials, partials[1:], strict=False))


def test_a_stream_refuses_integer_samples_and_sample_rates_out_of_range():
    stream = uni_model().stream()
    with pytest.raises(ValueError, match="int16 .*divide by 32768"):
        stream.feed(np.zeros(160, dtype=np.int16))
    with pytest.raises(ValueError, match="sample rate 4000"):
        uni_model().stream(sample_rate=4000)
    with pytest.raises(ValueError, match="pause must be positive"):
        uni_model().stream(pause=0)
