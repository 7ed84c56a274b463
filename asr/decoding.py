"""CTC decoding: per-frame log-probabilities -> text, with word times and confidences."""

from dataclasses import dataclass, field

import torch

from asr.text import CharTokenizer


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the start of the audio, at the word's first character
    end: float  # seconds, one output frame after the word's last character
    confidence: float  # mean posterior probability of the word's characters, 0..1


@dataclass(frozen=True)
class Transcription:
    text: str
    words: list[Word] = field(default_factory=list)
    duration: float = 0.0  # seconds of audio transcribed


def words_from_tokens(
    tokens: list[int],
    frames: list[int],
    probs: list[float],
    tokenizer: CharTokenizer,
    frame_shift: float,
) -> list[Word]:
    """Group emitted characters into words at spaces.

    Args:
        tokens: emitted token ids (no blanks), in order.
        frames: output frame index at which each token was emitted.
        probs: posterior probability of each emitted token.
        frame_shift: seconds per output frame.
    """
    words, current = [], []
    for token, frame, prob in [*zip(tokens, frames, probs, strict=True), (tokenizer.space_id, -1, 0.0)]:
        if token != tokenizer.space_id:
            current.append((token, frame, prob))
            continue
        if current:
            chars = [tokenizer.tokens[t] for t, _, _ in current]
            words.append(
                Word(
                    text="".join(chars),
                    start=round(current[0][1] * frame_shift, 3),
                    end=round((current[-1][1] + 1) * frame_shift, 3),
                    confidence=round(sum(p for _, _, p in current) / len(current), 4),
                )
            )
            current = []
    return words


def greedy_decode(log_probs: torch.Tensor, tokenizer: CharTokenizer, frame_shift: float) -> list[Word]:
    """Best path decoding of one utterance.

    Args:
        log_probs: (T, V) log-probabilities of the utterance's real frames.

    Returns:
        The words; the text is ``" ".join(w.text for w in words)``.
    """
    best_logp, best = log_probs.float().max(dim=-1)  # (T,), (T,)
    previous = torch.cat([best.new_full((1,), -1), best[:-1]])
    emitted = ((best != tokenizer.blank_id) & (best != previous)).nonzero().squeeze(1)  # (N,)
    return words_from_tokens(
        best[emitted].tolist(),
        emitted.tolist(),
        best_logp[emitted].exp().tolist(),
        tokenizer,
        frame_shift,
    )
