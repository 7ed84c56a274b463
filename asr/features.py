"""The feature front end: waveform -> normalised log-mel frames, as an ``nn.Module``.

It lives inside the model, so training and inference cannot compute features differently,
and its normalisation statistics are buffers that travel in every checkpoint and model file.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchaudio
from torch import nn

from asr.audio import SAMPLE_RATE

LOG_FLOOR = 1e-6  # added before the log so silence gives a finite value (-13.8)
DITHER_STEP = 1 / 32768  # one step of 16-bit audio: the least dither
UTTERANCE_VARIANCE_FLOOR = 1e-4  # of a log-mel bin over one utterance (speech: about 1-10)
WARP_BOUNDARY = 0.85  # share of the band below Nyquist that VTLP scales; the rest is squeezed


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation of the front end (``model.augment`` in YAML).

    SpecAugment masks bands and stretches of the normalised log-mel frames; VTLP (vocal tract
    length perturbation) makes each training utterance sound as if spoken by a longer or
    shorter vocal tract: its formants move up or down by a factor drawn per utterance, while
    its pitch and tempo stay (speed perturbation moves all three at once).

    Args:
        freq_masks, freq_mask_width: frequency masks per utterance, and their most mel bins.
        time_masks, time_mask_width: time masks per utterance, and their most frames.
        time_mask_ratio: no time mask covers more than this share of its own utterance, so
            that a short clip keeps most of its frames (two 40-frame masks would hide 80 % of
            a 1 s clip).
        warp: VTLP factors are drawn uniformly from [1 - warp, 1 + warp]; 0 turns it off.
        dither: the most white noise added to a training waveform (its standard deviation,
            full scale 1.0), drawn per utterance on a log scale from 1/32768 (one 16-bit step,
            Kaldi's dither) up to this; 0 turns it off. Synthetic speech is digitally silent
            between words, where every recording has a noise floor: the log floor (LOG_FLOOR,
            about the energy of one 16-bit step) is then all the model sees there.
    """

    freq_masks: int = 2
    freq_mask_width: int = 27
    time_masks: int = 2
    time_mask_width: int = 40
    time_mask_ratio: float = 0.2
    warp: float = 0.0
    dither: float = 0.0

    def __post_init__(self):
        if not 0 <= self.dither < 1:
            raise ValueError(f"augment.dither must be in [0, 1), got {self.dither}")
        if not 0 <= self.warp < 1:
            raise ValueError(f"augment.warp must be in [0, 1), got {self.warp}")
        if not 0 <= self.time_mask_ratio <= 1:
            raise ValueError(f"augment.time_mask_ratio must be in [0, 1], got {self.time_mask_ratio}")


NO_AUGMENT = Augment(freq_masks=0, time_masks=0)


class LogMel(nn.Module):
    """Log-mel spectrogram with mean/variance normalisation, and :class:`Augment` in training.

    Args:
        n_mels: mel bins per frame.
        win_ms: analysis window length in milliseconds (25 ms = 400 samples at 16 kHz).
        hop_ms: frame shift in milliseconds (10 ms = 100 frames per second).
        augment: what training mode does to the features (SpecAugment by default).
        utterance_norm: "mean" subtracts each utterance's own mean frame (cepstral mean
            normalisation) before the training set's statistics apply. It removes what is
            constant over an utterance: the channel's frequency response, the recording level
            and part of the speaker's spectral envelope. "meanvar" also divides each mel bin by
            its standard deviation over the utterance (CMVN), which evens out how loud the
            speech is against its background. None: the training set's statistics only. A
            stream does not know its mean before it ends, so streaming models use None.
    """

    def __init__(
        self,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        augment: Augment | None = None,
        utterance_norm: str | None = None,
    ):
        super().__init__()
        if utterance_norm not in (None, "mean", "meanvar"):
            raise ValueError(f"utterance_norm must be None, 'mean' or 'meanvar', got {utterance_norm!r}")
        self.utterance_norm = utterance_norm
        self.augment = augment or Augment()
        self.hop_length = round(SAMPLE_RATE * hop_ms / 1000)
        self.win_length = round(SAMPLE_RATE * win_ms / 1000)
        # center=False: a frame only sees its own samples, never padding, so an utterance
        # gets the same features alone or in a padded batch.
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE,
            n_fft=self.win_length,
            hop_length=self.hop_length,
            n_mels=n_mels,
            center=False,
        )
        # The mel filters' corner frequencies (HTK mel scale, as MelSpectrogram's), for VTLP.
        mels = torch.linspace(0.0, _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2)
        self.register_buffer("filter_corners", 700.0 * (10 ** (mels / 2595.0) - 1.0), persistent=False)
        # Statistics of the training set's log-mel frames (after the utterance normalisation if
        # that is on); identity until fit_stats() runs.
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.register_buffer("frames_seen", torch.zeros((), dtype=torch.long))

    @property
    def has_stats(self) -> bool:
        return bool(self.frames_seen > 0)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames produced for each input length: one per hop that fits a whole window.

        Inputs shorter than one window still give one (zero-padded) frame.
        """
        return (
            torch.div((num_samples - self.win_length).clamp_min(0), self.hop_length, rounding_mode="floor")
            + 1
        )

    def log_mel(self, audio: torch.Tensor, warps: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) float waveform -> (B, T, F) un-normalised log-mel frames, in fp32; with
        (B,) ``warps``, each utterance's frequencies scaled by its own factor (VTLP)."""
        if audio.shape[1] < self.win_length:
            audio = nn.functional.pad(audio, (0, self.win_length - audio.shape[1]))
        with torch.autocast(audio.device.type, enabled=False):
            if warps is None:
                mel = self.mel(audio.float())
            else:
                power = self.mel.spectrogram(audio.float())  # (B, n_freqs, T)
                mel = torch.einsum("bft,bfm->bmt", power, self.warped_filters(warps))
            return torch.log(mel + LOG_FLOOR).transpose(1, 2)

    def warped_filters(self, warps: torch.Tensor) -> torch.Tensor:
        """(B,) warp factors -> (B, n_freqs, n_mels) mel filterbanks that read the energy at
        frequency f as if it were at ``warp * f`` (piecewise linear, so that Nyquist stays
        Nyquist: Jaitly and Hinton's VTLP). A factor of 1 gives MelSpectrogram's own filters.
        """
        nyquist = SAMPLE_RATE / 2
        freqs = torch.linspace(0, nyquist, self.mel.mel_scale.fb.shape[0], device=warps.device)
        alpha = warps.float().unsqueeze(1)  # (B, 1)
        knee = WARP_BOUNDARY * nyquist * alpha.clamp(max=1) / alpha
        squeezed = nyquist - (nyquist - alpha * knee) / (nyquist - knee) * (nyquist - freqs)
        warped = torch.where(freqs <= knee, alpha * freqs, squeezed)  # (B, n_freqs)
        corners = self.filter_corners
        widths = corners[1:] - corners[:-1]
        slopes = corners - warped.unsqueeze(-1)  # (B, n_freqs, n_mels + 2)
        rising = -slopes[..., :-2] / widths[:-1]
        falling = slopes[..., 2:] / widths[1:]
        return torch.minimum(rising, falling).clamp_min(0)

    @torch.no_grad()
    def fit_stats(self, batches, total_over: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Set the normalisation statistics from ``(audio (B, S), audio_lens (B,))`` batches.

        Only real frames count (padding is excluded), accumulated in float64. ``total_over``
        sums a tensor over the processes of a distributed run (each of which has read its own
        batches), so that every process ends with the statistics of all their batches.
        """
        total = torch.zeros(self.mean.shape, dtype=torch.float64, device=self.mean.device)
        total_sq = torch.zeros_like(total)
        count = 0
        for audio, audio_lens in batches:
            feats = self.log_mel(audio.to(self.mean.device)).double()
            lens = self.num_frames(audio_lens.to(feats.device))
            mask = _length_mask(lens, feats.shape[1])
            feats = self._normalise_utterance(feats, mask, lens)
            real = feats[mask]  # (N, F)
            total += real.sum(0)
            total_sq += (real**2).sum(0)
            count += real.shape[0]
        if total_over is not None:
            sums = total_over(torch.cat([total, total_sq, total.new_tensor([count])]))
            total, total_sq, count = sums[: len(total)], sums[len(total) : -1], int(sums[-1])
        if count == 0:
            raise ValueError("no audio frames to compute feature statistics from")
        mean = total / count
        self.mean.copy_(mean)
        self.std.copy_((total_sq / count - mean**2).clamp_min(1e-8).sqrt())
        self.frames_seen.fill_(count)

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor):
        """(B, S) waveform, (B,) sample counts -> (B, T, F) features, (B,) frame counts.

        Padded frames are set to zero (the normalised mean) so they carry no signal.
        """
        augment = self.augment if self.training else NO_AUGMENT
        if augment.dither:
            audio = audio + _noise(audio, augment.dither) * _length_mask(audio_lens, audio.shape[1])
        warps = None
        if augment.warp:
            warps = 1 + augment.warp * (2 * torch.rand(audio.shape[0], device=audio.device) - 1)
        feats = self.log_mel(audio, warps)
        lens = self.num_frames(audio_lens)
        mask = _length_mask(lens, feats.shape[1])
        feats = (self._normalise_utterance(feats, mask, lens) - self.mean) / self.std
        feats = feats * mask.unsqueeze(-1)
        if augment.time_masks or augment.freq_masks:
            feats = _spec_augment(feats, lens, augment)
        return feats, lens

    def _normalise_utterance(
        self, feats: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """(B, T, F) frames, (B, T) real-frame mask, (B,) frame counts -> the frames with each
        utterance's own mean (and standard deviation) taken out, as ``utterance_norm`` says."""
        if self.utterance_norm is None:
            return feats
        count = lengths.to(feats.dtype)[:, None, None]
        weights = mask.unsqueeze(-1).to(feats.dtype)
        centred = feats - (feats * weights).sum(1, keepdim=True) / count
        if self.utterance_norm == "mean":
            return centred
        variance = (centred**2 * weights).sum(1, keepdim=True) / count
        # A floor, so that a digitally silent clip (every frame at the log floor) stays finite.
        return centred / variance.clamp_min(UTTERANCE_VARIANCE_FLOOR).sqrt()


def _noise(audio: torch.Tensor, most: float) -> torch.Tensor:
    """White noise shaped as ``audio`` (B, S), each utterance's level drawn log-uniformly
    between one 16-bit step and ``most`` (when ``most`` is smaller, at ``most``)."""
    least = min(DITHER_STEP, most)
    draw = torch.rand(audio.shape[0], 1, device=audio.device)
    level = least * (most / least) ** draw
    return torch.randn_like(audio) * level


def _spec_augment(feats: torch.Tensor, lengths: torch.Tensor, augment: Augment) -> torch.Tensor:
    """(B, T, F) frames, (B,) frame counts -> the frames with each utterance's own random time
    and frequency masks set to zero (the normalised mean)."""
    keep_frames = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
    for _ in range(augment.time_masks):
        widest = (lengths * augment.time_mask_ratio).floor().clamp(max=augment.time_mask_width)
        keep_frames &= ~_random_spans(lengths, widest, feats.shape[1])
    keep_bins = torch.ones(feats.shape[0], feats.shape[2], dtype=torch.bool, device=feats.device)
    bins = torch.full_like(lengths, feats.shape[2])
    for _ in range(augment.freq_masks):
        keep_bins &= ~_random_spans(bins, torch.full_like(bins, augment.freq_mask_width), feats.shape[2])
    return feats * (keep_frames.unsqueeze(-1) & keep_bins.unsqueeze(1))


def _random_spans(lengths: torch.Tensor, widest: torch.Tensor, size: int) -> torch.Tensor:
    """One random span per row: (B,) lengths, (B,) widest spans -> (B, size) bool, True inside
    a span of 0..widest positions that lies within the row's length."""
    width = (torch.rand(lengths.shape, device=lengths.device) * (widest + 1)).floor().clamp(max=lengths)
    start = (torch.rand(lengths.shape, device=lengths.device) * (lengths - width + 1)).floor()
    positions = torch.arange(size, device=lengths.device)
    return (positions >= start.unsqueeze(1)) & (positions < (start + width).unsqueeze(1))


def _hz_to_mel(hz: float) -> float:
    """HTK mel scale, as torchaudio's MelSpectrogram uses by default."""
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def _length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on real positions."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)
