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
MAX_CHANNELS = 8  # a 2-D array whose first axis is at most this long is read as (C, S)


class AudioError(ValueError):
    """An audio input that cannot be used. ``str(err)`` names the file and the problem."""

    def __init__(self, source, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    """Decode a file to (samples (S, C), sample rate)."""
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        return sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as sf_error:
        first_error = sf_error
    try:
        import warnings

        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns before trying audioread
            samples, rate = librosa.load(path, sr=None, mono=False, dtype=np.float32)
        return np.atleast_2d(samples).T, int(rate)
    except Exception:  # audioread raises many unrelated types
        raise AudioError(path, "not a readable audio file (unknown or damaged format)") from first_error


def _to_float(samples: np.ndarray) -> np.ndarray:
    """Integer PCM (e.g. int16 from scipy.io.wavfile) is scaled to [-1, 1]; floats pass as they are."""
    if np.issubdtype(samples.dtype, np.integer):
        return samples.astype(np.float32) / float(-np.iinfo(samples.dtype).min)
    return samples.astype(np.float32, copy=False)


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
        samples = samples.mean(axis=1)
    else:
        name = "<array>"
        if sample_rate is None:
            raise AudioError(name, "sample_rate is required when passing samples")
        samples = _to_float(
            source.detach().cpu().numpy() if hasattr(source, "detach") else np.asarray(source)
        )
        if samples.ndim == 2:
            # (C, S) from torch code when the first axis is a handful of channels, else (S, C).
            channels_first = samples.shape[0] <= MAX_CHANNELS and samples.shape[0] < samples.shape[1]
            samples = samples.mean(axis=0 if channels_first else 1)
        rate = sample_rate
    if samples.ndim != 1:
        raise AudioError(name, f"expected 1 or 2 dimensions, got shape {samples.shape}")
    if samples.size == 0:
        raise AudioError(name, "contains no audio samples")
    if not np.isfinite(samples).all():
        raise AudioError(name, "contains NaN or infinite samples")
    if rate != SAMPLE_RATE:
        samples = soxr.resample(samples, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return samples
