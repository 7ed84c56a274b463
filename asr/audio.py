"""Audio I/O: any common file or array -> mono float32 at 16 kHz.

soundfile (libsndfile) reads wav, flac, ogg/vorbis, opus and mp3 without spawning a
process; librosa (audioread, and ffmpeg where installed) is the fallback for the rest.
"""

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16000  # Hz: every model works at this rate; inputs are resampled to it


class AudioError(ValueError):
    """An audio input that cannot be used. ``str(err)`` names the file and the problem."""

    def __init__(self, source, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    """Decode a file to (samples (S,) or (S, C), sample rate)."""
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        return sf.read(path, dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, TypeError) as sf_error:
        first_error = sf_error
    try:
        import warnings

        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns before trying audioread
            samples, rate = librosa.load(path, sr=None, mono=False, dtype=np.float32)
        return samples.T, int(rate)
    except Exception:  # audioread raises many unrelated types; the first error says more
        reason = str(first_error).split(":")[-1].strip() or "unknown format"
        raise AudioError(path, f"not a readable audio file ({reason})") from None


def load_audio(source, sample_rate: int | None = None) -> np.ndarray:
    """Load ``source`` as mono float32 samples at :data:`SAMPLE_RATE`.

    Args:
        source: a path (str or PathLike), or samples as a numpy array / torch tensor of
            shape (S,) or (S, C) (channels last) or (C, S) when C <= 8.
        sample_rate: rate of ``source`` when it is an array; required for arrays.

    Returns:
        (S',) float32 samples in [-1, 1] at 16 kHz.

    Raises:
        AudioError: the file is missing, empty, not audio, has no samples, or holds
            NaN/inf values; the message names the source and the problem.
    """
    if isinstance(source, (str, os.PathLike)):
        name = str(source)
        samples, rate = _read_file(Path(source))
    else:
        name = "<array>"
        if sample_rate is None:
            raise AudioError(name, "sample_rate is required when passing samples")
        samples = source.detach().cpu().numpy() if hasattr(source, "detach") else np.asarray(source)
        rate = sample_rate
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        # Channels are the short axis: (C, S) arrays from torch code, (S, C) from soundfile.
        channel_axis = 0 if samples.shape[0] < samples.shape[1] else 1
        samples = samples.mean(axis=channel_axis)
    if samples.ndim != 1:
        raise AudioError(name, f"expected 1 or 2 dimensions, got shape {samples.shape}")
    if samples.size == 0:
        raise AudioError(name, "contains no audio samples")
    if not np.isfinite(samples).all():
        raise AudioError(name, "contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return samples
