"""Transcription: audio files or arrays in, :class:`~asr.decoding.Transcription` out.

These functions are bound onto the model as ``model.transcribe`` and
``model.transcribe_batch``; they need torch only (no Lightning).
"""

from typing import TYPE_CHECKING

import torch

from asr.audio import SAMPLE_RATE, load_audio
from asr.decoding import Transcription, greedy_decode

if TYPE_CHECKING:
    from asr.model import RecurrentCTC

# Audio seconds per forward pass: bounds memory while keeping batches large enough to be fast.
MAX_BATCH_SECONDS = 240.0


def pad_batch(samples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (S_i,) waveforms -> (B, S_max) zero-padded batch and (B,) lengths."""
    lengths = torch.tensor([len(s) for s in samples])
    return torch.nn.utils.rnn.pad_sequence(samples, batch_first=True), lengths


@torch.inference_mode()
def transcribe_batch(
    model: "RecurrentCTC", audios: list, sample_rate: int | None = None
) -> list[Transcription]:
    """Transcribe several inputs (paths, numpy arrays or tensors), batched by length.

    Args:
        audios: each a file path, or samples with ``sample_rate`` given.
        sample_rate: rate of array inputs (files carry their own).

    Raises:
        asr.audio.AudioError: an input cannot be read (the message names it).
    """
    waves = [torch.from_numpy(load_audio(a, sample_rate)) for a in audios]
    # Sorting by length keeps padding (wasted compute) small inside each batch.
    order = sorted(range(len(waves)), key=lambda i: len(waves[i]))
    results: list[Transcription | None] = [None] * len(waves)
    was_training = model.training
    model.eval()
    try:
        for batch in _batches(order, [len(w) / SAMPLE_RATE for w in waves]):
            audio, lengths = pad_batch([waves[i] for i in batch])
            logits, frames = model(audio.to(model.device), lengths.to(model.device))
            log_probs = logits.float().log_softmax(-1).cpu()
            for row, i in enumerate(batch):
                words = greedy_decode(
                    log_probs[row, : frames[row]], model.tokenizer, model.config.frame_shift
                )
                text = " ".join(w.text for w in words)
                results[i] = Transcription(text, words, duration=round(len(waves[i]) / SAMPLE_RATE, 3))
    finally:
        model.train(was_training)
    return results


def transcribe(model: "RecurrentCTC", audio, sample_rate: int | None = None) -> Transcription:
    """Transcribe one file path, numpy array or tensor (``sample_rate`` needed for arrays)."""
    return transcribe_batch(model, [audio], sample_rate)[0]


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
