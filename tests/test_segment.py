"""asr/segment.py and long inputs: cut at pauses, decoded in pieces, stitched with global times."""

from pathlib import Path

import numpy as np
import pytest

import asr
from asr.audio import SAMPLE_RATE, load_audio
from asr.segment import split_at_pauses

DEMO = Path(__file__).parents[1] / "recipes" / "synth" / "demo"
GAP = 1.0  # seconds of silence between the clips of a long recording


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [load_audio(path) for path in sorted(DEMO.glob("*.flac"))]


def long_recording(clips, repeats: int, noise: float = 0.003) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Clips one after another with GAP seconds of faint noise between; and where each clip's
    speech (its first to last sample above -40 dBFS, not its silent margins) starts and ends."""
    rng = np.random.default_rng(0)
    parts, spans, at = [], [], 0.0
    for clip in clips * repeats:
        gap = (noise * rng.standard_normal(int(GAP * SAMPLE_RATE))).astype(np.float32)
        parts += [clip, gap]
        loud = np.flatnonzero(np.abs(clip) > 0.01)
        spans.append((at + loud[0] / SAMPLE_RATE, at + (loud[-1] + 1) / SAMPLE_RATE))
        at += (len(clip) + len(gap)) / SAMPLE_RATE
    return np.concatenate(parts), spans


def test_short_audio_is_one_piece():
    assert split_at_pauses(np.zeros(SAMPLE_RATE * 5)) == [(0, SAMPLE_RATE * 5)]


@pytest.mark.parametrize("vad", ["silero", "energy"])
def test_long_audio_is_cut_in_the_pauses_only(clips, vad):
    audio, spans = long_recording(clips, repeats=6)  # ~2 min
    pieces = split_at_pauses(audio, max_seconds=20, min_seconds=8, vad=vad)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))  # nothing lost
    assert all(end - start <= 20 * SAMPLE_RATE for start, end in pieces)
    for _, cut in pieces[:-1]:
        seconds = cut / SAMPLE_RATE
        assert not any(start < seconds < end for start, end in spans), f"cut at {seconds:.2f} s is in a clip"


def test_split_options_are_checked():
    with pytest.raises(ValueError, match="silero or energy"):
        split_at_pauses(np.zeros(10), vad="webrtc")
    with pytest.raises(ValueError, match="min_seconds < max_seconds"):
        split_at_pauses(np.zeros(10), max_seconds=5, min_seconds=10)


def test_a_long_recording_reads_as_its_clips_with_global_times(clips):
    model = asr.load_model()
    audio, spans = long_recording(clips, repeats=4)  # ~75 s: three pieces at least
    assert len(split_at_pauses(audio)) >= 3
    whole = model.transcribe(audio, SAMPLE_RATE)
    assert whole.duration == pytest.approx(len(audio) / SAMPLE_RATE, abs=1e-3)
    # Nothing is lost at the cuts: every clip gets words. (Their spelling is the model's: a
    # piece of several sentences reads worse than each alone, see recipes/synth/long_audio.py.)
    assert all(any(start - 0.15 <= w.start < end for w in whole.words) for start, end in spans)
    starts = [w.start for w in whole.words]
    assert starts == sorted(starts)
    # Every word is heard inside a clip's speech, timed from the start of the recording: none
    # lies in a gap, and all but a few start inside a clip (README's long-audio study has 99.4 %
    # start and end inside).
    for word in whole.words:
        assert any(start - 0.15 <= word.end and word.start <= end + 0.15 for start, end in spans), word
    inside = [any(start - 0.15 <= w.start <= end for start, end in spans) for w in whole.words]
    assert sum(inside) >= 0.98 * len(inside), [w for w, ok in zip(whole.words, inside, strict=True) if not ok]
