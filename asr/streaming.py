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
of every RNN layer. Partial text costs only the new frames: the greedy path is extended, not
re-decoded. At a pause (``pause`` seconds of blank frames after a word) the stretch since the
last one is decoded once with the final options (beam search and LM by default), its words
become final (``stream.committed``) and its frames leave memory: a stream may run for hours.
With greedy final options the final words are those of ``model.transcribe(whole audio)``,
but that a pause always ends a word.

A bidirectional model needs the end of what it reads: :class:`WindowStream` re-decodes a
bounded window of the latest audio at a fixed cadence, and decodes each stretch once more
for the final text when it leaves the window.
"""

import queue

import numpy as np
import soxr
import torch
from torch import nn

from asr.audio import SAMPLE_RATE
from asr.decoding import DecodingOptions, Transcription, Word, words_from_tokens
from asr.inference import default_options, get_decoder, shifted

GREEDY = DecodingOptions()
# Raw audio a stream takes from a socket or a pipe: 16-bit little-endian PCM or float32.
ENCODINGS = {"pcm16": np.dtype("<i2"), "f32": np.dtype("<f4")}
RATES = (8000, 192000)  # the stream sample rates accepted


def pcm_samples(data: bytes, encoding: str) -> np.ndarray:
    """Raw audio bytes (a whole number of samples) -> float32 samples; a ValueError for
    samples that are no audio (NaN, infinite)."""
    chunk = np.frombuffer(data, dtype=ENCODINGS[encoding])
    chunk = chunk.astype(np.float32) / 32768 if encoding == "pcm16" else chunk.astype(np.float32)
    if not np.isfinite(chunk).all():
        raise ValueError("audio holds NaN or infinite samples")
    return chunk


def read_pcm(source, encoding: str, samples: int, name: str = "stdin"):
    """Chunks of ``samples`` float32 samples from a binary file or pipe of raw audio, as they
    arrive, until it ends; a ValueError names ``name`` if it ends inside a sample or holds
    samples that are no audio (float32 read from 16-bit PCM gives NaN and huge values)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
    width = ENCODINGS[encoding].itemsize
    rest = b""
    while data := source.read(samples * width):
        data = rest + data
        whole = len(data) - len(data) % width
        rest = data[whole:]
        try:
            chunk = pcm_samples(data[:whole], encoding)
        except ValueError as err:
            raise ValueError(f"{name}: {err}; is it {encoding}?") from None
        if encoding == "f32" and len(chunk) and np.abs(chunk).max() > 64:
            raise ValueError(
                f"{name}: float32 samples of magnitude {np.abs(chunk).max():.3g}, not audio in [-1, 1]; "
                "is it 16-bit PCM (--encoding pcm16)?"
            )
        yield chunk
    if rest:
        raise ValueError(
            f"{name}: the audio ends inside a sample ({len(rest)} bytes of a {width}-byte {encoding} one)"
        )


def microphone(chunk_seconds: float, device=None):
    """The default (or ``device``) microphone: ``(sample rate, chunks)``, chunks of float32
    mono samples as they are recorded, until the consumer stops. Needs the ``mic`` extra
    (sounddevice, and the system's PortAudio library); a missing microphone is a
    ValueError of one line."""
    try:
        import sounddevice as sd
    except ImportError:
        raise ValueError("the microphone needs sounddevice: pip install 'asr[mic]'") from None
    except OSError as err:  # sounddevice found no PortAudio library
        raise ValueError(
            f"the microphone needs the PortAudio library ({err}): apt-get install libportaudio2"
        ) from None
    try:
        info = sd.query_devices(device, kind="input")
    except (sd.PortAudioError, ValueError) as err:
        raise ValueError(f"no microphone found ({str(err).strip()})") from None
    rate = int(info["default_samplerate"])
    if not RATES[0] <= rate <= RATES[1]:
        raise ValueError(
            f"microphone {info['name']!r} records at {rate} Hz; streams take {RATES[0]}-{RATES[1]} Hz"
        )

    def chunks():
        recorded = queue.Queue()
        with sd.InputStream(
            samplerate=rate, channels=1, dtype="float32", device=device,
            blocksize=max(1, round(chunk_seconds * rate)),
            callback=lambda data, frames, time, status: recorded.put(data[:, 0].copy()),
        ):  # fmt: skip
            while True:
                yield recorded.get()

    return rate, chunks()


def open_stream(
    model, sample_rate: int = SAMPLE_RATE, options: DecodingOptions | None = None, pause: float | None = 0.8
):
    """An exact :class:`Stream` when ``model`` can stream (unidirectional, global feature
    normalisation), else a :class:`WindowStream`; ``stream.mode`` says which ("exact" or
    "window"). Either way, ``stream.committed`` holds the words that are final so far, the
    start of every transcription ``feed`` returns."""
    if model.config.bidirectional or model.config.feature_norm != "global":
        return WindowStream(model, sample_rate, options)
    return Stream(model, sample_rate, options, pause)


def _resampler(sample_rate: int):
    """A stream's resampler to 16 kHz (soxr, so that chunk edges leave no clicks), or None."""
    if not RATES[0] <= sample_rate <= RATES[1]:
        raise ValueError(f"sample rate {sample_rate}: a stream takes {RATES[0]} to {RATES[1]} Hz")
    return None if sample_rate == SAMPLE_RATE else soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1)


def _incoming(chunk, resampler, finished: bool) -> np.ndarray:
    """A chunk fed to a stream, checked, as float32 samples at 16 kHz."""
    if finished:
        raise ValueError("this stream is finished; start another")
    chunk = np.asarray(chunk.detach().cpu() if hasattr(chunk, "detach") else chunk)
    if not np.issubdtype(chunk.dtype, np.floating):
        raise ValueError(
            f"a stream takes float samples in [-1, 1], got {chunk.dtype}"
            + (" (16-bit PCM: divide by 32768)" if chunk.dtype == np.int16 else "")
        )
    chunk = chunk.astype(np.float32, copy=False)
    if chunk.ndim != 1:
        raise ValueError(f"a stream takes mono chunks of shape (S,), got {chunk.shape}")
    return chunk if resampler is None else resampler.resample_chunk(chunk)


class Stream:
    """Speech being recognized as it comes; made by ``model.stream()``.

    Args:
        sample_rate: rate of the chunks to come; other rates than 16 kHz are resampled as a
            stream (soxr), so chunk edges leave no clicks.
        options: how each stretch between pauses, and the end, are decoded for the final text
            (partial results are greedy); by default the model's own
            (:func:`asr.inference.default_options`).
        pause: seconds of blank frames after a word that end a stretch (its words become
            final); None: the whole stream is one stretch, decoded at :meth:`finish`.
    """

    mode = "exact"

    def __init__(
        self,
        model,
        sample_rate: int = SAMPLE_RATE,
        options: DecodingOptions | None = None,
        pause: float | None = 0.8,
    ):
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
        if pause is not None and pause <= 0:
            raise ValueError(f"pause must be positive (seconds) or None, got {pause}")
        self.model = model.eval()
        self.options = options or default_options(model)
        self.resampler = _resampler(sample_rate)
        self.tokenizer = model.tokenizer
        self.frame_shift = model.config.frame_shift
        self.pause_frames = None if pause is None else max(1, round(pause / self.frame_shift))
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
        self.seconds = 0.0
        self.finished = False
        self.committed: list[Word] = []  # final words of the stretches ended by a pause
        # The stretch since the last pause: its output frames, and its greedy path so far.
        self.log_probs = []  # (T_i, V) per step
        self.start = 0  # its first output frame
        self.frames = 0  # output frames made so far
        self.words: list[Word] = []  # greedy words that a space has ended
        self.spoken: list[tuple[int, int, float]] = []  # (token, frame, prob) of the word being said
        self.previous = -1  # best token of the last frame
        self.silent = 0  # frames of blanks and spaces since the last character

    @torch.inference_mode()
    def feed(self, chunk) -> Transcription:
        """Add the next samples (mono array or tensor, the stream's rate); return the text so far."""
        chunk = _incoming(chunk, self.resampler, self.finished)
        self._advance(torch.from_numpy(np.ascontiguousarray(chunk)).to(self.samples.device), last=False)
        return self._transcription(final=False)

    @torch.inference_mode()
    def finish(self) -> Transcription:
        """End the stream: run the frames held for look-ahead and decode the last stretch."""
        if not self.finished:
            tail = np.zeros(0, dtype=np.float32)
            if self.resampler is not None:
                tail = self.resampler.resample_chunk(tail, last=True)
            self._advance(torch.from_numpy(tail).to(self.samples.device), last=True)
            self._commit()
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
        self._take(model.head(x)[0].float().log_softmax(-1))

    def _take(self, log_probs: torch.Tensor) -> None:
        """New output frames (T, V): extend the partial text; after a pause, commit."""
        self.log_probs.append(log_probs)
        self._extend_path(log_probs)
        if self.pause_frames is not None and self.silent >= self.pause_frames:
            if self.words or self.spoken:
                self._commit()
            else:  # silence only, which decodes to nothing: it leaves memory
                self.log_probs, self.start = [], self.frames

    def _extend_path(self, log_probs: torch.Tensor) -> None:
        """Extend the greedy path by new frames (as :func:`asr.decoding.greedy_decode` would
        decode them with all the earlier ones); the words a space ends are kept decoded."""
        best_logp, best = log_probs.max(dim=-1)
        blank, space = self.tokenizer.blank_id, self.tokenizer.space_id
        for i, (token, prob) in enumerate(zip(best.tolist(), best_logp.exp().tolist(), strict=True)):
            if token != blank and token != self.previous:
                if token == space:
                    self.words += self._path_words()
                    self.spoken = []
                else:
                    self.spoken.append((token, self.frames + i, prob))
            self.silent = self.silent + 1 if token in (blank, space) else 0
            self.previous = token
        self.frames += len(best)

    def _path_words(self) -> list[Word]:
        if not self.spoken:
            return []
        tokens, frames, probs = zip(*self.spoken, strict=True)
        return words_from_tokens(list(tokens), list(frames), list(probs), self.tokenizer, self.frame_shift)

    def _commit(self) -> None:
        """The stretch since the last pause, decoded with the final options, becomes final."""
        if self.options.method == "greedy":
            words = self.words + self._path_words()
        elif self.log_probs:
            decode = get_decoder(self.options, self.model.config.alphabet, self.frame_shift)
            offset = self.start * self.frame_shift
            words = [shifted(w, offset) for w in decode(torch.cat(self.log_probs))]
        else:
            words = []
        self.committed += words
        self.log_probs, self.start, self.words, self.spoken = [], self.frames, [], []

    def _transcription(self, final: bool) -> Transcription:
        words = list(self.committed) if final else self.committed + self.words + self._path_words()
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
