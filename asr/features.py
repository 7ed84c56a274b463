"""The feature front end: waveform -> normalised log-mel frames, as an ``nn.Module``.

It lives inside the model, so training and inference cannot compute features differently,
and its normalisation statistics are buffers that travel in every checkpoint and model file.
"""

import torch
import torchaudio
from torch import nn

from asr.audio import SAMPLE_RATE

LOG_FLOOR = 1e-6  # added before the log so silence gives a finite value (-13.8)


class LogMel(nn.Module):
    """Log-mel spectrogram with mean/variance normalisation and SpecAugment.

    Args:
        n_mels: mel bins per frame.
        win_ms: analysis window length in milliseconds (25 ms = 400 samples at 16 kHz).
        hop_ms: frame shift in milliseconds (10 ms = 100 frames per second).
        freq_masks, freq_mask_width: SpecAugment frequency masks (count, max bins each).
        time_masks, time_mask_width: SpecAugment time masks (count, max frames each).
        utterance_mean: subtract each utterance's own mean frame (cepstral mean normalisation)
            instead of the training set's. It removes what is constant over an utterance: the
            channel's frequency response, the recording level and part of the speaker's
            spectral envelope. A stream does not know its mean before it ends, so streaming
            models use the global mean.
    """

    def __init__(
        self,
        n_mels: int = 80,
        win_ms: float = 25.0,
        hop_ms: float = 10.0,
        freq_masks: int = 2,
        freq_mask_width: int = 27,
        time_masks: int = 2,
        time_mask_width: int = 40,
        utterance_mean: bool = False,
    ):
        super().__init__()
        self.utterance_mean = utterance_mean
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
        # iid_masks: each utterance in a batch gets its own masks.
        augment = [torchaudio.transforms.FrequencyMasking(freq_mask_width, iid_masks=True)] * freq_masks
        augment += [torchaudio.transforms.TimeMasking(time_mask_width, iid_masks=True)] * time_masks
        self.spec_augment = nn.Sequential(*augment)
        # Statistics of the training set's log-mel frames (after utterance mean subtraction if
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

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, S) float waveform -> (B, T, F) un-normalised log-mel frames, in fp32."""
        if audio.shape[1] < self.win_length:
            audio = nn.functional.pad(audio, (0, self.win_length - audio.shape[1]))
        with torch.autocast(audio.device.type, enabled=False):
            return torch.log(self.mel(audio.float()) + LOG_FLOOR).transpose(1, 2)

    @torch.no_grad()
    def fit_stats(self, batches) -> None:
        """Set the normalisation statistics from ``(audio (B, S), audio_lens (B,))`` batches.

        Only real frames count (padding is excluded), accumulated in float64.
        """
        total = torch.zeros(self.mean.shape, dtype=torch.float64, device=self.mean.device)
        total_sq = torch.zeros_like(total)
        count = 0
        for audio, audio_lens in batches:
            feats = self.log_mel(audio.to(self.mean.device)).double()
            lens = self.num_frames(audio_lens.to(feats.device))
            mask = _length_mask(lens, feats.shape[1])
            if self.utterance_mean:
                feats = feats - _utterance_mean(feats, mask, lens)
            real = feats[mask]  # (N, F)
            total += real.sum(0)
            total_sq += (real**2).sum(0)
            count += real.shape[0]
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
        feats = self.log_mel(audio)
        lens = self.num_frames(audio_lens)
        mask = _length_mask(lens, feats.shape[1])
        if self.utterance_mean:
            feats = feats - _utterance_mean(feats, mask, lens)
        feats = (feats - self.mean) / self.std
        if self.training and len(self.spec_augment):
            feats = self.spec_augment(feats.transpose(1, 2)).transpose(1, 2)
        feats = feats * mask.unsqueeze(-1)
        return feats, lens


def _utterance_mean(feats: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, T, F) frames, (B, T) real-frame mask, (B,) frame counts -> (B, 1, F) mean of each
    utterance's real frames."""
    return (feats * mask.unsqueeze(-1)).sum(1, keepdim=True) / lengths.to(feats.dtype)[:, None, None]


def _length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on real positions."""
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(1)
