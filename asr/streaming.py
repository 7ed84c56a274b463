"""Streaming recognition: audio chunks in, growing text out.

    stream = open_stream(model)         # or model.stream() for a unidirectional model
    for chunk in chunks:                # any sizes, as they arrive
        print(stream.feed(chunk).text)  # the partial transcript so far
    print(stream.finish().text)         # final

:class:`Stream` (a unidirectional model with global feature normalisation) is exact: every
stage keeps exactly the state the offline forward pass would see, so the outputs are the
same frames, not an approximation: the log-mel frames of complete windows, the inputs the
two convolutions still need (they look 2 and ``subsampling`` frames ahead: with 3x
subsampling the text lags the audio by 50 ms plus the 25 ms window), and the hidden state
of every RNN layer. The final text is the same as ``model.transcribe(whole audio)``.

A bidirectional model needs the end of what it reads: :class:`WindowStream` re-decodes a
bounded window of the latest audio at a fixed cadence, and decodes each stretch once more
for the final text when it leaves the window.
"""

import numpy as np
import soxr
import torch
from torch import nn

from asr.audio import SAMPLE_RATE, load_audio
from asr.decoding import DecodingOptions, Transcription, Word, greedy_decode
from asr.inference import default_options, get_decoder, shifted

GREEDY = DecodingOptions()


def open_stream(model, sample_rate: int = SAMPLE_RATE, options: DecodingOptions | None = None):
    """An exact :class:`Stream` when ``model`` can stream (unidirectional, global feature
    normalisation), else a :class:`WindowStream`; ``stream.mode`` says which ("exact" or
    "window")."""
    if model.config.bidirectional or model.config.feature_norm != "global":
        return WindowStream(model, sample_rate, options)
    return Stream(model, sample_rate, options)


def _resampler(sample_rate: int):
    """A stream's resampler to 16 kHz (soxr, so that chunk edges leave no clicks), or None."""
    return None if sample_rate == SAMPLE_RATE else soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1)


def _incoming(chunk, resampler, finished: bool) -> np.ndarray:
    """A chunk fed to a stream, checked, as float32 samples at 16 kHz."""
    if finished:
        raise ValueError("this stream is finished; start another")
    chunk = np.asarray(chunk.detach().cpu() if hasattr(chunk, "detach") else chunk, dtype=np.float32)
    if chunk.ndim != 1:
        raise ValueError(f"a stream takes mono chunks of shape (S,), got {chunk.shape}")
    return chunk if resampler is None else resampler.resample_chunk(chunk)


class Stream:
    """One utterance being recognized; made by ``model.stream()``.

    Args:
        sample_rate: rate of the chunks to come; other rates than 16 kHz are resampled as a
            stream (soxr), so chunk edges leave no clicks.
        options: how :meth:`finish` decodes the whole utterance (partial results are greedy);
            by default the model's own (:func:`asr.inference.default_options`).
    """

    mode = "exact"

    def __init__(self, model, sample_rate: int = SAMPLE_RATE, options: DecodingOptions | None = None):
        if model.config.bidirectional:
            raise ValueError(
                "streaming needs a unidirectional model (model.net.bidirectional: false); "
                "this one reads every utterance backwards too"
            )
        if model.config.feature_norm != "global":
            raise ValueError(
                "streaming needs a model with model.net.feature_norm: global; this one subtracts "
                "each utterance's mean, which a stream knows only when it ends"
            )
        self.model = model.eval()
        self.options = options or default_options(model)
        self.resampler = _resampler(sample_rate)
        sub = model.subsample
        self.context1 = sub.conv1.kernel_size[0] // 2  # frames conv1 sees on each side
        self.context2 = sub.conv2.padding[0]  # conv1 outputs conv2 sees on each side
        self.factor = sub.factor
        device = model.device
        self.samples = torch.zeros(0, device=device)  # not yet framed
        self.frames_done = 0  # feature frames made so far
        # Left context starts as the zero padding of the offline convolutions.
        self.feats = torch.zeros(self.context1, model.config.n_mels, device=device)
        self.conv1_out = torch.zeros(self.context2, model.config.conv_channels, device=device)
        self.states = [None] * len(model.layers)
        self.log_probs = []  # (T_i, V) per step
        self.seconds = 0.0
        self.finished = False

    @torch.inference_mode()
    def feed(self, chunk) -> Transcription:
        """Add the next samples (mono array or tensor, the stream's rate); return the text so far."""
        chunk = _incoming(chunk, self.resampler, self.finished)
        self._advance(torch.from_numpy(np.ascontiguousarray(chunk)).to(self.samples.device), last=False)
        return self._transcription(final=False)

    @torch.inference_mode()
    def finish(self) -> Transcription:
        """End the utterance: run the frames held for look-ahead and decode it whole."""
        if not self.finished:
            tail = np.zeros(0, dtype=np.float32)
            if self.resampler is not None:
                tail = self.resampler.resample_chunk(tail, last=True)
            self._advance(torch.from_numpy(tail).to(self.samples.device), last=True)
            self.finished = True
        return self._transcription(final=True)

    def _advance(self, samples: torch.Tensor, last: bool) -> None:
        """Run every stage as far as its input allows; ``last`` adds the offline right padding."""
        frontend, sub = self.model.frontend, self.model.subsample
        self.seconds += len(samples) / SAMPLE_RATE
        self.samples = torch.cat([self.samples, samples])
        if last and self.frames_done == 0 and 0 < len(self.samples) < frontend.win_length:
            # As offline: an utterance shorter than one window is padded to one frame.
            self.samples = nn.functional.pad(self.samples, (0, frontend.win_length - len(self.samples)))
        # Log-mel frames of the complete windows (each frame depends on its own samples only).
        count = max(0, (len(self.samples) - frontend.win_length) // frontend.hop_length + 1)
        if count:
            used = (count - 1) * frontend.hop_length + frontend.win_length
            feats = (frontend.log_mel(self.samples[None, :used])[0] - frontend.mean) / frontend.std
            self.samples = self.samples[count * frontend.hop_length :]
            self.frames_done += count
            self.feats = torch.cat([self.feats, feats])
        # conv1: each output sees context1 frames on both sides; at the end, zeros as offline.
        if last:
            self.feats = nn.functional.pad(self.feats, (0, 0, 0, self.context1))
        ready = len(self.feats) - 2 * self.context1
        if ready > 0:
            x = nn.functional.conv1d(self.feats.T[None], sub.conv1.weight, sub.conv1.bias)
            self.conv1_out = torch.cat([self.conv1_out, nn.functional.gelu(sub.norm1(x.transpose(1, 2)))[0]])
            self.feats = self.feats[ready:]
        # conv2: one output per `factor` conv1 outputs, each seeing context2 on both sides.
        if last:
            self.conv1_out = nn.functional.pad(self.conv1_out, (0, 0, 0, self.context2))
        span = 2 * self.context2 + 1
        if len(self.conv1_out) >= span:
            ready = (len(self.conv1_out) - span) // self.factor + 1
            window = self.conv1_out[: (ready - 1) * self.factor + span]
            x = nn.functional.conv1d(window.T[None], sub.conv2.weight, sub.conv2.bias, stride=self.factor)
            self.conv1_out = self.conv1_out[ready * self.factor :]
            self._recur(nn.functional.gelu(sub.norm2(x.transpose(1, 2))))

    def _recur(self, x: torch.Tensor) -> None:
        model = self.model
        for n, (layer, norm) in enumerate(zip(model.layers, model.norms, strict=True)):
            x, self.states[n] = layer.forward_rnn(x, self.states[n])
            x = norm(x)
        self.log_probs.append(model.head(x)[0].float().log_softmax(-1))

    def _transcription(self, final: bool) -> Transcription:
        log_probs = torch.cat(self.log_probs) if self.log_probs else torch.zeros(0, len(self.model.tokenizer))
        config = self.model.config
        if final and self.options.method != "greedy":
            words = get_decoder(self.options, config.alphabet, config.frame_shift)(log_probs)
        else:
            words = greedy_decode(log_probs, self.model.tokenizer, config.frame_shift)
        return Transcription(" ".join(w.text for w in words), words, duration=round(self.seconds, 3))


class WindowStream:
    """One utterance recognized chunk by chunk by a model that cannot stream exactly (a
    bidirectional one reads each utterance backwards too); made by :func:`open_stream`.

    Partial results re-decode a bounded window: the audio since the last committed point,
    greedy, each time ``cadence`` seconds of new audio have come. When the window holds
    ``window`` seconds, the words that end before its last ``keep`` seconds are committed: the
    stretch up to the pause after them is decoded once with the final ``options`` and leaves
    memory. Each stretch of audio is thus decoded at most ``window / cadence`` times for
    partial results and once for the final text, however long the stream; its words near a
    window's end may still change until committed.

    Args:
        sample_rate: rate of the chunks to come (resampled to 16 kHz as a stream).
        options: how committed stretches and the end are decoded (the final text); by
            default the model's own (:func:`asr.inference.default_options`).
    """

    mode = "window"

    def __init__(
        self,
        model,
        sample_rate: int = SAMPLE_RATE,
        options: DecodingOptions | None = None,
        window: float = 10.0,
        cadence: float = 1.0,
        keep: float = 2.0,
    ):
        if not 0 < keep < window or cadence <= 0:
            raise ValueError(f"need 0 < keep < window and cadence > 0, got {keep}, {window}, {cadence}")
        self.model = model.eval()
        self.options = options or default_options(model)
        self.resampler = _resampler(sample_rate)
        self.window, self.cadence, self.keep = window, cadence, keep
        self.audio = np.zeros(0, dtype=np.float32)  # 16 kHz samples since the committed point
        self.offset = 0.0  # seconds committed (where self.audio starts)
        self.committed: list[Word] = []  # final words of the committed stretches
        self.latest: list[Word] = []  # the window's words at its last decoding
        self.undecoded = 0  # samples come since that decoding
        self.finished = False

    @property
    def seconds(self) -> float:
        return self.offset + len(self.audio) / SAMPLE_RATE

    def feed(self, chunk) -> Transcription:
        """Add the next samples (mono, the stream's rate); return the text so far."""
        chunk = _incoming(chunk, self.resampler, self.finished)
        self.audio = np.concatenate([self.audio, chunk])
        self.undecoded += len(chunk)
        if self.undecoded >= self.cadence * SAMPLE_RATE:
            self.undecoded = 0
            self.latest = self._decode(self.audio, GREEDY)
            if len(self.audio) >= self.window * SAMPLE_RATE:
                self._commit()
        return self._transcription(self.committed + self.latest)

    def finish(self) -> Transcription:
        """End the utterance: decode what the window holds with the final options."""
        if not self.finished:
            if self.resampler is not None:
                tail = self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                self.audio = np.concatenate([self.audio, tail])
            if len(self.audio):
                self.committed += self._decode(self.audio, self.options)
            self.offset, self.audio, self.latest = self.seconds, self.audio[:0], []
            self.finished = True
        return self._transcription(self.committed)

    def _decode(self, audio: np.ndarray, options: DecodingOptions) -> list[Word]:
        words = self.model.transcribe(audio, SAMPLE_RATE, options).words
        return [shifted(w, self.offset) for w in words]

    def _commit(self) -> None:
        """Decode the window's start up to its last pause before the kept end, for good."""
        end = self.seconds - self.keep
        # The last gap between two words that starts before ``end``: cut in its middle.
        cut = end
        for before, after in zip(self.latest, self.latest[1:], strict=False):
            if after.start <= end:
                cut = (before.end + after.start) / 2
        samples = max(1, round((cut - self.offset) * SAMPLE_RATE))
        self.committed += self._decode(self.audio[:samples], self.options)
        self.offset += samples / SAMPLE_RATE
        self.audio = self.audio[samples:]
        self.latest = [w for w in self.latest if w.start >= self.offset]

    def _transcription(self, words: list[Word]) -> Transcription:
        return Transcription(" ".join(w.text for w in words), list(words), duration=round(self.seconds, 3))


def stream_file(model, path, chunk_seconds: float = 0.2, options: DecodingOptions | None = None):
    """Feed a file to a stream (:func:`open_stream`) in chunks of ``chunk_seconds``; yields
    ``(seconds heard, partial transcription)`` after each chunk, then the final one."""
    audio = load_audio(path)
    stream = open_stream(model, SAMPLE_RATE, options)
    step = max(1, int(chunk_seconds * SAMPLE_RATE))
    for start in range(0, len(audio), step):
        yield (min(start + step, len(audio)) / SAMPLE_RATE, stream.feed(audio[start : start + step]))
    yield len(audio) / SAMPLE_RATE, stream.finish()
