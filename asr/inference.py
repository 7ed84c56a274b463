"""Transcription: audio files or arrays in, :class:`~asr.decoding.Transcription` out.

These functions are bound onto the model as ``model.transcribe`` and
``model.transcribe_batch``; they need torch only (no Lightning).
"""

import ctypes
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from functools import lru_cache
from typing import TYPE_CHECKING

import torch

from asr.audio import SAMPLE_RATE, AudioError, load_audio
from asr.decoding import BeamSearch, DecodingOptions, Transcription, Word, greedy_decode
from asr.segment import split_at_pauses
from asr.text import CharTokenizer

if TYPE_CHECKING:
    from asr.model import RecurrentCTC

# Audio seconds per forward pass: bounds memory while keeping batches large enough to be fast.
MAX_BATCH_SECONDS = 240.0


def pad_batch(samples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (S_i,) waveforms -> (B, S_max) zero-padded batch and (B,) lengths."""
    lengths = torch.tensor([len(s) for s in samples])
    return torch.nn.utils.rnn.pad_sequence(samples, batch_first=True), lengths


def transcribe_batch(
    model: "RecurrentCTC",
    audios: list,
    sample_rate: int | None = None,
    options: DecodingOptions | None = None,
    return_exceptions: bool = False,
) -> list[Transcription | AudioError]:
    """Transcribe several inputs (paths, numpy arrays or tensors) of any length, batched by length.

    Inputs longer than :data:`asr.segment.MAX_PIECE_SECONDS` are cut at pauses
    (:func:`asr.segment.split_at_pauses`) and stitched back: word times are from the start of
    each input.

    Args:
        audios: each a file path, or samples with ``sample_rate`` given.
        sample_rate: rate of array inputs (files carry their own).
        options: how to decode; by default :func:`default_options`: the beam search the
            model was tuned with (``model.beam_options``) when it has one, else greedy.
        return_exceptions: an input that cannot be read gets its :class:`~asr.audio.AudioError`
            in its place in the list, and the others are transcribed (as ``asyncio.gather``).

    Raises:
        asr.audio.AudioError: an input cannot be read (the message names it), unless
            ``return_exceptions``.
    """
    group = [(audio, _read(audio, sample_rate)) for audio in audios]
    if not return_exceptions:
        for _, wave in group:
            if isinstance(wave, AudioError):
                raise wave
    return [result for _, result in _transcribe_group(model, group, options)]


def transcribe_files(
    model: "RecurrentCTC", paths: Iterable, options: DecodingOptions | None = None
) -> Iterator[tuple[object, Transcription | AudioError]]:
    """``(path, transcription)`` of each file in order, or ``(path, AudioError)`` for one that
    cannot be read. Files are read a group of about :data:`MAX_BATCH_SECONDS` of audio at a
    time, so memory holds one group whatever the number of files."""
    group, seconds = [], 0.0
    for path in paths:
        wave = _read(path)
        if not isinstance(wave, AudioError):
            seconds += len(wave) / SAMPLE_RATE
        group.append((path, wave))
        if seconds >= MAX_BATCH_SECONDS:
            yield from _transcribe_group(model, group, options)
            group, seconds = [], 0.0
    yield from _transcribe_group(model, group, options)


def _read(audio, sample_rate: int | None = None):
    """The 16 kHz samples of ``audio``, or the AudioError that says why it cannot be read."""
    try:
        return load_audio(audio, sample_rate)
    except AudioError as err:
        return err


def _transcribe_group(model, group: list, options) -> Iterator[tuple[object, Transcription | AudioError]]:
    waves = [torch.from_numpy(wave) for _, wave in group if not isinstance(wave, AudioError)]
    results = iter(_transcribe_waves(model, waves, options))
    for path, wave in group:
        yield path, wave if isinstance(wave, AudioError) else next(results)


def _transcribe_waves(
    model: "RecurrentCTC", waves: list[torch.Tensor], options: DecodingOptions | None
) -> list[Transcription]:
    """The transcription of each 16 kHz waveform (:func:`transcribe_batch`)."""
    if not waves:
        return []
    decode = get_decoder(options or default_options(model), model.config.alphabet, model.config.frame_shift)
    # Inputs longer than MAX_PIECE_SECONDS are cut at pauses; the pieces of all inputs share
    # batches, and each piece's word times are shifted by where it starts.
    pieces = [(i, start, end) for i, wave in enumerate(waves) for start, end in split_at_pauses(wave)]
    found: list[list[Word]] = [[] for _ in pieces]
    for k, log_probs in log_probs_batch(model, [waves[i][start:end] for i, start, end in pieces]):
        offset = pieces[k][1] / SAMPLE_RATE
        found[k] = [shifted(w, offset) for w in decode(log_probs)]
    words: list[list[Word]] = [[] for _ in waves]
    for (i, _, _), piece_words in zip(pieces, found, strict=True):  # pieces are in time order
        words[i] += piece_words
    return [
        Transcription(" ".join(w.text for w in ws), ws, duration=round(len(wave) / SAMPLE_RATE, 3))
        for wave, ws in zip(waves, words, strict=True)
    ]


def shifted(word: Word, seconds: float) -> Word:
    """``word`` with its times moved ``seconds`` later (a piece's words, in its whole)."""
    if not seconds:
        return word
    return replace(word, start=round(word.start + seconds, 3), end=round(word.end + seconds, 3))


@torch.inference_mode()
def log_probs_batch(model: "RecurrentCTC", waves: list[torch.Tensor]) -> Iterator[tuple[int, torch.Tensor]]:
    """``(i, (T_i, V) log-probabilities)`` of each 16 kHz waveform, in length-sorted batches
    (so padding, wasted compute, stays small); ``i`` indexes ``waves``. The network runs under
    bfloat16 autocast when ``model.precision`` is "bf16"."""
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    was_training = model.training
    model.eval()
    bf16 = model.precision == "bf16"
    try:
        for batch in _batches(order, [len(w) / SAMPLE_RATE for w in waves]):
            audio, lengths = pad_batch([waves[i] for i in batch])
            with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits, frames = model(audio.to(model.device), lengths.to(model.device))
            log_probs = logits.float().log_softmax(-1).cpu()
            for row, i in enumerate(batch):
                yield i, log_probs[row, : frames[row]]
            del audio, logits, log_probs
            _release_freed_memory()
    finally:
        model.train(was_training)


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator returns memory its own way
        return None


def _release_freed_memory() -> None:
    """Give the memory of a finished batch back to the system. Batches differ in shape, and
    glibc keeps what large tensors freed for later ones that do not fit it: an hour of audio
    grew the peak by 650 MB where the freed memory was returned (make bench, scaling)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def transcribe(
    model: "RecurrentCTC", audio, sample_rate: int | None = None, options: DecodingOptions | None = None
) -> Transcription:
    """Transcribe one file path, numpy array or tensor (``sample_rate`` needed for arrays)."""
    return transcribe_batch(model, [audio], sample_rate, options)[0]


def default_options(model) -> DecodingOptions:
    """How ``model`` decodes unless told otherwise: the beam search and LM tuned for it
    (``model.beam_options``, read from ``<model>.decoding.json``) when it has one, else greedy."""
    return model.beam_options or DecodingOptions()


@lru_cache(maxsize=4)
def get_decoder(
    options: DecodingOptions, alphabet: str, frame_shift: float
) -> Callable[[torch.Tensor], list[Word]]:
    """(T, V) log-probabilities -> the best words; beam search decoders (and their LMs) load once."""
    tokenizer = CharTokenizer(alphabet)
    if options.method == "greedy":
        return lambda log_probs: greedy_decode(log_probs, tokenizer, frame_shift)
    search = BeamSearch(options, tokenizer, frame_shift)
    return lambda log_probs: next(iter(search(log_probs)), [])  # no hypothesis: no words


def _batches(order: list[int], seconds: list[float]):
    """Split indices (sorted by length) into batches of at most MAX_BATCH_SECONDS padded audio."""
    batch: list[int] = []
    for i in order:
        if batch and seconds[i] * (len(batch) + 1) > MAX_BATCH_SECONDS:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
