"""Greedy CTC decoding: per-frame log-probabilities -> words with times and confidences."""

import pytest
import torch

from asr.decoding import Word, greedy_decode, words_from_tokens
from asr.text import CharTokenizer

TOKENIZER = CharTokenizer()
FRAME_SHIFT = 0.02  # seconds per output frame (10 ms hop, subsampling 2)


def label_id(label: str) -> int:
    """'_' is the blank; any other character is its own token."""
    return TOKENIZER.blank_id if label == "_" else TOKENIZER.tokens.index(label)


def frame_log_probs(labels: str, probs: float | list[float] = 0.9) -> torch.Tensor:
    """(T, V) log-probabilities whose best label at frame t is ``labels[t]``, with probability
    ``probs`` (or ``probs[t]``); the rest of each frame's mass is spread over the other tokens."""
    if isinstance(probs, float):
        probs = [probs] * len(labels)
    vocab = len(TOKENIZER)
    table = torch.empty(len(labels), vocab, dtype=torch.float64)
    for t, (label, p) in enumerate(zip(labels, probs, strict=True)):
        assert p > (1 - p) / (vocab - 1), "the label must be the most likely token"
        table[t] = (1 - p) / (vocab - 1)
        table[t, label_id(label)] = p
    return table.log().float()


def decode(labels: str, probs: float | list[float] = 0.9, frame_shift: float = FRAME_SHIFT) -> list[Word]:
    return greedy_decode(frame_log_probs(labels, probs), TOKENIZER, frame_shift)


def text_of(words: list[Word]) -> str:
    return " ".join(w.text for w in words)


@pytest.mark.parametrize(
    "labels, expected",
    [
        ("_hh_e_ll_l_o_ _w_o_rld", "hello world"),
        ("hello", "helo"),  # "ll" on adjacent frames is one l
        ("hel_lo", "hello"),  # a blank between two l's keeps both
        ("hhhhhh", "h"),
        ("h_h_h", "hhh"),
        ("__a__", "a"),
        ("cat  __ dog", "cat dog"),
    ],
)
def test_greedy_decode_collapses_repeats_and_drops_blanks(labels, expected):
    assert text_of(decode(labels)) == expected


def test_words_are_split_at_spaces():
    words = decode("_the_ _cat_ _sat_")
    assert [w.text for w in words] == ["the", "cat", "sat"]


@pytest.mark.parametrize("labels", ["", "_", "__________"])
def test_all_blank_input_gives_no_words(labels):
    assert decode(labels) == []


@pytest.mark.parametrize("labels", ["  _hi_", "_hi_   ", "_hi_ __ _ _there_", "   ", " _ _ "])
def test_leading_trailing_and_repeated_spaces_give_no_empty_words(labels):
    words = decode(labels)
    assert all(w.text for w in words)
    assert [w.text for w in words] == text_of(words).split()


def test_word_times_come_from_frame_indices():
    #         012345678901
    labels = "_hi__ __yo__"
    words = decode(labels)

    assert [w.text for w in words] == ["hi", "yo"]
    hi, yo = words
    assert hi.start == pytest.approx(1 * FRAME_SHIFT)  # 'h' at frame 1
    assert hi.end == pytest.approx((2 + 1) * FRAME_SHIFT)  # 'i' at frame 2, plus one frame
    assert yo.start == pytest.approx(8 * FRAME_SHIFT)
    assert yo.end == pytest.approx((9 + 1) * FRAME_SHIFT)


def test_word_starts_at_the_first_frame_of_a_repeated_first_character():
    (word,) = decode("___hhh_i_")
    assert word.start == pytest.approx(3 * FRAME_SHIFT)
    assert word.end == pytest.approx((7 + 1) * FRAME_SHIFT)


@pytest.mark.parametrize("frame_shift", [0.01, 0.02, 0.03, 0.04])
def test_word_times_scale_with_the_frame_shift(frame_shift):
    labels = "__a_b____ ___c_"
    (ab, c) = decode(labels, frame_shift=frame_shift)
    assert (ab.start, ab.end) == pytest.approx(
        (labels.index("a") * frame_shift, (labels.index("b") + 1) * frame_shift)
    )
    assert (c.start, c.end) == pytest.approx(
        (labels.index("c") * frame_shift, (labels.index("c") + 1) * frame_shift)
    )


def test_word_times_are_ordered():
    words = decode("_a_b_ _cd_ __e_ f_g")
    for word in words:
        assert 0 <= word.start < word.end
    for before, after in zip(words, words[1:], strict=False):
        assert before.end <= after.start


def test_confidence_is_the_mean_probability_of_the_word_characters():
    labels = "_h_i_ _y_o_"
    probs = [0.5, 0.9, 0.5, 0.6, 0.5, 0.5, 0.5, 0.8, 0.5, 0.7, 0.5]
    hi, yo = decode(labels, probs)
    assert hi.confidence == pytest.approx((0.9 + 0.6) / 2, abs=1e-4)
    assert yo.confidence == pytest.approx((0.8 + 0.7) / 2, abs=1e-4)


@pytest.mark.parametrize("prob", [0.05, 0.3, 0.9, 1.0])
def test_confidence_lies_in_unit_interval(prob):
    (word,) = decode("_w_o_r_d_", prob)
    assert 0 < word.confidence <= 1
    assert word.confidence == pytest.approx(prob, abs=1e-4)


def test_blank_probability_does_not_count_towards_confidence():
    labels = "_a_"
    probs = [0.99, 0.4, 0.99]
    (word,) = decode(labels, probs)
    assert word.confidence == pytest.approx(0.4, abs=1e-4)


def test_greedy_decode_accepts_double_precision_log_probs():
    log_probs = frame_log_probs("_hi_").double()
    assert text_of(greedy_decode(log_probs, TOKENIZER, FRAME_SHIFT)) == "hi"


# words_from_tokens on its own


def test_words_from_tokens_groups_characters_between_spaces():
    tokens = TOKENIZER.encode("ab cd")
    frames = [2, 3, 5, 8, 9]
    probs = [0.9, 0.7, 0.8, 0.6, 0.5]

    words = words_from_tokens(tokens, frames, probs, TOKENIZER, frame_shift=0.04)

    assert words == [
        Word("ab", start=pytest.approx(2 * 0.04), end=pytest.approx(4 * 0.04), confidence=pytest.approx(0.8)),
        Word(
            "cd", start=pytest.approx(8 * 0.04), end=pytest.approx(10 * 0.04), confidence=pytest.approx(0.55)
        ),
    ]


def test_words_from_tokens_of_nothing_is_empty():
    assert words_from_tokens([], [], [], TOKENIZER, FRAME_SHIFT) == []


def test_words_from_tokens_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        words_from_tokens(TOKENIZER.encode("ab"), [0], [0.5, 0.5], TOKENIZER, FRAME_SHIFT)
