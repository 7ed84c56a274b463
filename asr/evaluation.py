"""Scoring a recognizer on a cut manifest: WER, CER and speed.

Any recognizer that maps a batch of 16 kHz waveforms to texts can be scored, so our models
and reference recognizers are measured by the same code on the same audio.
"""

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lhotse import CutSet
from torchmetrics.functional.text import char_error_rate, word_error_rate

from asr.audio import SAMPLE_RATE
from asr.decoding import DecodingOptions
from asr.files import available_cores, write_atomically
from asr.inference import get_decoder, log_probs_batch
from asr.text import DEFAULT_ALPHABET, normalize_text

Recognizer = Callable[[list[np.ndarray]], list[str]]


@dataclass
class Evaluation:
    """Hypotheses against references, and the seconds the recognizer spent on them."""

    ids: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    hyps: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    elapsed: float = 0.0  # wall seconds inside the recognizer (audio loading excluded)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (cut id, problem): not scored

    @property
    def wer(self) -> float:
        return float(word_error_rate(self.hyps, self.refs))

    @property
    def cer(self) -> float:
        return float(char_error_rate(self.hyps, self.refs))

    @property
    def speed(self) -> float:
        """Audio seconds recognized per wall second (x real time)."""
        return self.audio_seconds / max(self.elapsed, 1e-9)

    def summary(self) -> str:
        skipped = f" ({len(self.failed)} unreadable cuts skipped)" if self.failed else ""
        return (
            f"{len(self.ids)} utterances{skipped}, {self.audio_seconds / 60:.1f} min, "
            f"WER {100 * self.wer:.2f} %, CER {100 * self.cer:.2f} %, {self.speed:.0f}x real time"
        )

    def listing(self) -> str:
        """Every utterance as three lines: id and WER, reference, hypothesis."""
        return "".join(
            f"{i}  WER {100 * word_error_rate(h, r):.0f} %\n  REF: {r}\n  HYP: {h}\n"
            for i, r, h in zip(self.ids, self.refs, self.hyps, strict=True)
        )

    def write(self, path: str | os.PathLike) -> Path:
        """One JSON object per utterance (id, ref, hyp, wer), written atomically."""
        lines = "".join(
            json.dumps({"id": i, "ref": r, "hyp": h, "wer": round(float(word_error_rate(h, r)), 4)}) + "\n"
            for i, r, h in zip(self.ids, self.refs, self.hyps, strict=True)
        )
        return write_atomically(path, lambda partial: partial.write_text(lines))


def evaluate(
    recognize: Recognizer,
    cuts: CutSet,
    alphabet: str = DEFAULT_ALPHABET,
    batch_size: int = 64,
    done: Callable[[int], object] | None = None,
) -> Evaluation:
    """Run ``recognize`` over ``cuts`` (resampled to 16 kHz, downmixed) in batches and score it.

    References are the cuts' supervision texts normalised to ``alphabet``. A cut whose audio
    cannot be read (missing, damaged) is not scored: it goes to ``failed`` with the problem, and
    the others are scored. ``done(n)`` is told of each batch of ``n`` cuts finished (a
    progress bar's ``update``).
    """
    result = Evaluation()
    for cuts_read in _chunks(cuts.resample(SAMPLE_RATE), batch_size):
        chunk, audio = [], []
        for cut in cuts_read:
            try:
                audio.append(cut.load_audio().mean(axis=0))
            except Exception as err:  # lhotse and the audio backends raise many kinds
                result.failed.append((cut.id, f"{type(err).__name__}: {err}"))
            else:
                chunk.append(cut)
        if chunk:
            started = time.perf_counter()
            hyps = recognize(audio)
            result.elapsed += time.perf_counter() - started
            for cut, hyp in zip(chunk, hyps, strict=True):
                result.ids.append(cut.id)
                result.refs.append(_reference(cut, alphabet))
                result.hyps.append(hyp)
                result.audio_seconds += cut.duration
        if done is not None:
            done(len(cuts_read))
    return result


def model_recognizer(model, options=None) -> Recognizer:
    """A loaded model's transcription (its default decoding, or as ``options`` say) as a
    :data:`Recognizer`."""
    return lambda audio: [r.text for r in model.transcribe_batch(audio, SAMPLE_RATE, options)]


def pocketsphinx_recognizer(jobs: int | None = None) -> Recognizer:
    """PocketSphinx 5 with the US English model its wheel ships, as a :data:`Recognizer`.

    A reference point trained on real speech: it is scored by the same code on the same audio.
    Its decoder is single-threaded, so clips are decoded in ``jobs`` processes (default: one
    per core this process may use), as our model uses every core. Its words are normalised
    like ours (it writes some as "o'clock", "i'm").
    """
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        raise ValueError("pocketsphinx is not installed: pip install pocketsphinx==5.1.1") from None
    pool = ProcessPoolExecutor(jobs or available_cores(), initializer=_start_pocketsphinx)
    return lambda audio: list(pool.map(_pocketsphinx_decode, audio))


_pocketsphinx = None  # one decoder per worker process


def _start_pocketsphinx() -> None:
    global _pocketsphinx
    from pocketsphinx import Decoder

    _pocketsphinx = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")


def _pocketsphinx_decode(samples: np.ndarray) -> str:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    _pocketsphinx.start_utt()
    _pocketsphinx.process_raw(pcm, full_utt=True)
    _pocketsphinx.end_utt()
    hyp = _pocketsphinx.hyp()
    return normalize_text(hyp.hypstr) if hyp else ""


RECOGNIZERS = {"pocketsphinx": pocketsphinx_recognizer}


def network_log_probs(model, cuts) -> tuple[list[torch.Tensor], float]:
    """Each cut's (T, V) log-probabilities, in the order of ``cuts``, and the wall seconds the
    network took over all of them (audio loading excluded)."""
    waves = [torch.from_numpy(c.resample(SAMPLE_RATE).load_audio().mean(axis=0)) for c in cuts]
    started = time.perf_counter()
    found = dict(log_probs_batch(model, waves))
    return [found[i] for i in range(len(waves))], time.perf_counter() - started


def score_search(
    decode: Callable[[torch.Tensor], str],
    cuts,
    log_probs: list[torch.Tensor],
    alphabet: str = DEFAULT_ALPHABET,
) -> Evaluation:
    """``decode`` ((T, V) log-probabilities of one utterance -> text) scored on each cut's
    network output (:func:`network_log_probs`); its speed counts the search alone."""
    result = Evaluation(
        ids=[c.id for c in cuts],
        refs=[_reference(c, alphabet) for c in cuts],
        audio_seconds=sum(c.duration for c in cuts),
    )
    started = time.perf_counter()
    result.hyps = [decode(x) for x in log_probs]
    result.elapsed = time.perf_counter() - started
    return result


def tune_beam(
    model, cuts: CutSet, options: list[DecodingOptions]
) -> Iterator[tuple[DecodingOptions, Evaluation]]:
    """Score each of ``options`` (beam searches differing in LM weight, word score, ...) on
    ``cuts``. The network runs once; only the search is repeated, so a grid is cheap.

    Each evaluation's speed counts the search alone (the network's share is the same for all).
    """
    alphabet, frame_shift = model.config.alphabet, model.config.frame_shift
    cuts = list(cuts)
    log_probs, _ = network_log_probs(model, cuts)
    for option in options:
        decode = get_decoder(option, alphabet, frame_shift)
        yield option, score_search(lambda x: " ".join(w.text for w in decode(x)), cuts, log_probs, alphabet)  # noqa: B023


def table(rows: list[tuple[str, str, Evaluation]], speed: str = "speed (x real time)") -> str:
    """Markdown table of (test set, recognizer, result) rows; ``speed`` heads the speed column."""
    header, *body = ["| " + " | ".join(cells) + " |" for cells in table_cells(rows, speed)]
    return "\n".join([header, "|---|---|---|---|---|---|", *body])


def table_cells(
    rows: list[tuple[str, str, Evaluation]], speed: str = "speed (x real time)"
) -> list[list[str]]:
    """The cells of :func:`table`, its header first: the HTML report shows the same numbers."""
    cells = [["test set", "recognizer", "utterances", "WER %", "CER %", speed]]
    for name, recognizer, r in rows:
        scores = [f"{100 * r.wer:.2f}", f"{100 * r.cer:.2f}", f"{r.speed:.0f}"]
        cells.append([name, recognizer, str(len(r.ids)), *scores])
    return cells


def _reference(cut, alphabet: str) -> str:
    """A cut's transcript as it is scored: its supervisions' texts normalised to ``alphabet``."""
    return normalize_text(" ".join(s.text or "" for s in cut.supervisions), alphabet)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
