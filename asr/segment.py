"""Long audio: cut at pauses into pieces that are decoded in batches and stitched back.

A bidirectional RNN could read an hour in one sequence, but that sequence would run on one
core, step by step, with activations growing with its length. Pieces of at most
:data:`MAX_PIECE_SECONDS`, cut where nobody speaks, batch like any other clips, keep memory
bounded, and never split a word. The cut between two pieces goes at the quietest point of
a search window: where silero-vad's speech probability is lowest (its model ships in its
wheel, so it runs offline) and, among equally silent points, where the energy is lowest;
without silero-vad, energy alone decides.
"""

import warnings
from functools import lru_cache

import numpy as np
import torch

from asr.audio import SAMPLE_RATE

MAX_PIECE_SECONDS = 30.0  # longer inputs are cut; shorter ones are decoded whole
MIN_PIECE_SECONDS = 10.0  # a cut is searched between these two lengths after the previous one
HOP = SAMPLE_RATE // 100  # 10 ms analysis frames
SMOOTHING = 20  # frames (200 ms) over which quietness is averaged: a pause, not a stop consonant
VAD_WINDOW = 512  # samples per silero-vad decision (32 ms at 16 kHz)
VAD_ROWS_SECONDS = 10  # silero-vad reads the audio as a batch of rows this long (its steps: one row's)


def split_at_pauses(
    samples: np.ndarray | torch.Tensor,
    max_seconds: float = MAX_PIECE_SECONDS,
    min_seconds: float = MIN_PIECE_SECONDS,
    vad: str = "silero",
) -> list[tuple[int, int]]:
    """``(start, end)`` sample spans that cover ``samples`` (16 kHz) end to end, each at most
    ``max_seconds`` long, the cuts in pauses.

    Args:
        vad: "silero" (falls back to "energy" when silero-vad is not installed) or "energy".
    """
    if vad not in ("silero", "energy"):
        raise ValueError(f"vad must be silero or energy, got {vad!r}")
    if not 0 < min_seconds < max_seconds:
        raise ValueError(f"need 0 < min_seconds < max_seconds, got {min_seconds} and {max_seconds}")
    samples = np.asarray(samples, dtype=np.float32)
    total = len(samples)
    longest = int(max_seconds * SAMPLE_RATE)
    if total <= longest:
        return [(0, total)]
    score = _quietness(samples, vad)  # per 10 ms frame, lower is quieter
    spans, start = [], 0
    while total - start > longest:
        first = (start + int(min_seconds * SAMPLE_RATE)) // HOP
        last = (start + longest) // HOP
        cut = (first + int(np.argmin(score[first:last]))) * HOP
        spans.append((start, cut))
        start = cut
    spans.append((start, total))
    return spans


def _quietness(samples: np.ndarray, vad: str) -> np.ndarray:
    """Per 10 ms frame: smoothed energy in dB, plus 100 dB wherever silero-vad hears speech."""
    frames = len(samples) // HOP
    framed = samples[: frames * HOP].reshape(frames, HOP)
    power = np.einsum("ij,ij->i", framed, framed) / HOP  # no squared copy of the audio
    kernel = np.ones(SMOOTHING) / SMOOTHING
    score = np.convolve(10 * np.log10(power + 1e-10), kernel, mode="same")
    speech = _speech_probability(samples) if vad == "silero" else None
    if speech is not None:
        frame_times = (np.arange(frames) + 0.5) * HOP
        window_times = (np.arange(len(speech)) + 0.5) * VAD_WINDOW
        score += 100 * np.convolve(np.interp(frame_times, window_times, speech), kernel, mode="same")
    return score


def _speech_probability(samples: np.ndarray) -> np.ndarray | None:
    """silero-vad's speech probability per 32 ms window, or None if it is not installed.

    The audio is read as rows of about 10 s in one batch (the model's state restarts at each
    row): an hour takes seconds instead of a minute or more window by window, and a minute
    0.47 s where rows of a minute took 0.73 s, cutting at the same places. The rows are a view
    of the samples, each a whole number of windows; the few windows left over make a row of
    their own, so the audio is not copied.
    """
    model = _silero()
    if model is None:
        return None
    rows = -(-len(samples) // (VAD_ROWS_SECONDS * SAMPLE_RATE))
    length = len(samples) // rows // VAD_WINDOW * VAD_WINDOW
    parts = [torch.from_numpy(samples[: rows * length]).view(rows, length)]
    if rows * length < len(samples):  # padded to a whole window: silero-vad refuses less
        tail = samples[rows * length :]
        parts.append(torch.from_numpy(np.pad(tail, (0, -len(tail) % VAD_WINDOW)))[None])
    with torch.inference_mode():
        probs = [model.audio_forward(part, SAMPLE_RATE).flatten() for part in parts]
    return torch.cat(probs).numpy()[: -(-len(samples) // VAD_WINDOW)]


@lru_cache(maxsize=1)
def _silero():
    try:
        from silero_vad import load_silero_vad
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its loader's deprecation notices are not the user's to act on
        return load_silero_vad()
