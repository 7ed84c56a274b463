"""Streaming recognition with a unidirectional model: audio chunks in, growing text out.

    stream = model.stream()
    for chunk in chunks:                # any sizes, as they arrive
        print(stream.feed(chunk).text)  # the partial transcript so far
    print(stream.finish().text)         # final: the same as model.transcribe(whole audio)

Every stage keeps exactly the state the offline forward pass would see, so the outputs are
the same frames, not an approximation: the log-mel frames of complete windows, the inputs
the two convolutions still need (they look 2 and ``subsampling`` frames ahead: with 3x
subsampling the text lags the audio by 50 ms plus the 25 ms window), and the hidden state
of every RNN layer. A bidirectional model needs the whole utterance and cannot stream.
"""

import numpy as np
import soxr
import torch
from torch import nn

from asr.audio import SAMPLE_RATE, load_audio
from asr.decoding import DecodingOptions, Transcription, greedy_decode
from asr.inference import default_options, get_decoder


class Stream:
    """One utterance being recognized; made by ``model.stream()``.

    Args:
        sample_rate: rate of the chunks to come; other rates than 16 kHz are resampled as a
            stream (soxr), so chunk edges leave no clicks.
        options: how :meth:`finish` decodes the whole utterance (partial results are greedy);
            by default the model's own (:func:`asr.inference.default_options`).
    """

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
        self.resampler = (
            None if sample_rate == SAMPLE_RATE else soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1)
        )
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
        if self.finished:
            raise ValueError("this stream is finished; start another with model.stream()")
        chunk = np.asarray(chunk.detach().cpu() if hasattr(chunk, "detach") else chunk, dtype=np.float32)
        if chunk.ndim != 1:
            raise ValueError(f"a stream takes mono chunks of shape (S,), got {chunk.shape}")
        if self.resampler is not None:
            chunk = self.resampler.resample_chunk(chunk)
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


def stream_file(model, path, chunk_seconds: float = 0.2, options: DecodingOptions | None = None):
    """Feed a file to a stream in chunks of ``chunk_seconds``; yields ``(seconds heard,
    partial transcription)`` after each chunk, then the final one."""
    audio = load_audio(path)
    stream = Stream(model, SAMPLE_RATE, options)
    step = max(1, int(chunk_seconds * SAMPLE_RATE))
    for start in range(0, len(audio), step):
        yield (min(start + step, len(audio)) / SAMPLE_RATE, stream.feed(audio[start : start + step]))
    yield len(audio) / SAMPLE_RATE, stream.finish()
