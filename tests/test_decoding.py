"""CTC decoding (greedy, beam search with LMs): per-frame log-probabilities -> words with times."""

import gzip
import json
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from asr import decoding
from asr.charlm import CharLM, CharLMConfig, save_charlm
from asr.decoding import (
    BeamSearch,
    DecodingOptions,
    Word,
    _boosted,
    _lexicon_of,
    _speller,
    _without_kenlm_notes,
    _word_search,
    align_words,
    binary_lm,
    build_binary_tool,
    greedy_decode,
    read_beam_defaults,
    read_lexicon,
    words_from_tokens,
    write_beam_defaults,
)
from asr.ngram import build_arpa
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


# beam search


def ambiguous_log_probs(first: str = "k", second: str = "c") -> torch.Tensor:
    """(T, V) frames of "the ?at sat" where ``first`` (0.5) is a little likelier than ``second`` (0.4)."""
    frames = frame_log_probs("the_ _xat_ _sat").exp()  # frame 6 is replaced
    q = frames[6].clone()
    q[:] = 0.1 / (len(TOKENIZER) - 2)
    q[label_id(first)], q[label_id(second)] = 0.5, 0.4
    frames[6] = q
    return frames.log()


def test_beam_search_without_lm_agrees_with_greedy():
    log_probs = frame_log_probs("_hh_e_ll_llo_  _w_orr_ld__", 0.8)
    beam = BeamSearch(DecodingOptions(method="beam", beam_size=8), TOKENIZER, FRAME_SHIFT)
    assert beam(log_probs)[0] == greedy_decode(log_probs, TOKENIZER, FRAME_SHIFT)


def test_beam_search_returns_nbest_best_first():
    search = BeamSearch(DecodingOptions(method="beam", nbest=3), TOKENIZER, FRAME_SHIFT)
    hyps = [text_of(words) for words in search(ambiguous_log_probs())]
    assert hyps[:2] == ["the kat sat", "the cat sat"]


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory) -> str:
    text = ["the cat sat on the mat", "a cat sat", "the cat sat down", "my dog sat on the cat"]
    return str(build_arpa(text, tmp_path_factory.mktemp("lm") / "lm.arpa", order=3))


def test_an_ngram_lm_tips_an_ambiguous_word_to_the_likelier_sentence(word_lm):
    emissions = ambiguous_log_probs(first="m", second="c")  # "the mat sat" is what the audio favours
    for weight, expected in ((0.0, "the mat sat"), (1.0, "the cat sat")):
        options = DecodingOptions(method="beam", lm=word_lm, lm_weight=weight)
        assert text_of(BeamSearch(options, TOKENIZER, FRAME_SHIFT)(emissions)[0]) == expected
    assert Path(f"{word_lm}.lexicon").read_text().count("\n") == 9  # the LM's words, written once


def test_the_lms_lexicon_is_written_again_when_missing_or_older_than_the_lm(tmp_path):
    lm = str(build_arpa(["a cat sat"], tmp_path / "words.arpa", order=2))
    lexicon = _lexicon_of(lm)
    assert set(read_lexicon(lexicon)) == {"a", "cat", "sat"}
    lexicon.unlink()
    assert _lexicon_of(lm) == lexicon and set(read_lexicon(lexicon)) == {"a", "cat", "sat"}
    build_arpa(["the dog ran"], lm, order=2)  # another LM in its place, newer than the lexicon
    later = lexicon.stat().st_mtime_ns + 10**9
    os.utime(lm, ns=(later, later))
    assert set(read_lexicon(_lexicon_of(lm))) == {"the", "dog", "ran"}


def test_beam_size_token_tries_only_the_likeliest_tokens_of_each_frame(word_lm):
    emissions = ambiguous_log_probs(first="m", second="c")
    for tokens, expected in ((None, "the cat sat"), (2, "the cat sat"), (1, "the mat sat")):
        options = DecodingOptions(method="beam", lm=word_lm, lm_weight=1.0, beam_size_token=tokens)
        assert text_of(BeamSearch(options, TOKENIZER, FRAME_SHIFT)(emissions)[0]) == expected


def test_an_lm_loads_without_kenlm_notes_and_a_bad_one_is_named(word_lm, tmp_path, capfd):
    lm = str(build_arpa(["a cat sat", "the cat"], tmp_path / "new.arpa"))  # not loaded before
    _word_search(str(_lexicon_of(lm)), lm, tuple(TOKENIZER.tokens))
    assert capfd.readouterr().err == ""  # KenLM says "Loading the LM will be faster if ..."
    with _without_kenlm_notes():
        os.write(2, b"Loading the LM will be faster if you build a binary file.\nReading lm.arpa\n")
        os.write(2, b"----5---10---15\n*****\nwarning: something else\n")
    assert capfd.readouterr().err == "warning: something else\n"  # anything else gets through
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=many\n")
    with pytest.raises(ValueError, match=f"{bad}: not a readable ARPA language model"):
        _word_search(str(_lexicon_of(word_lm)), str(bad), tuple(TOKENIZER.tokens))


needs_build_binary = pytest.mark.skipif(
    build_binary_tool() is None, reason="KenLM's build_binary is not built"
)


@needs_build_binary
def test_an_arpa_lm_is_searched_through_its_binary_made_once_and_remade_when_stale(tmp_path, monkeypatch):
    text = ["the cat sat on the mat", "a cat sat", "the cat sat down", "my dog sat on the cat"]
    lm = str(build_arpa(text, tmp_path / "lm.arpa.gz", order=3))
    emissions = ambiguous_log_probs(first="m", second="c")
    options = DecodingOptions(method="beam", lm=lm, lm_weight=1.0, nbest=3)
    binary = Path(f"{lm}.binary")
    with_binary = BeamSearch(options, TOKENIZER, FRAME_SHIFT)(emissions)
    assert binary.read_bytes().startswith(b"mmap lm ")  # KenLM's binary header
    made = binary.stat().st_mtime_ns
    _word_search.cache_clear()
    assert binary_lm(lm) == str(binary) and binary.stat().st_mtime_ns == made  # not made again
    # The same search as over the ARPA file itself (build_binary not installed).
    binary.unlink()
    _word_search.cache_clear()
    monkeypatch.setattr(decoding, "build_binary_tool", lambda: None)
    assert binary_lm(lm) == lm
    assert BeamSearch(options, TOKENIZER, FRAME_SHIFT)(emissions) == with_binary
    assert not binary.exists()
    monkeypatch.undo()
    _word_search.cache_clear()
    # A binary older than its ARPA file is made again; a damaged one too, never a crash.
    assert binary_lm(lm) == str(binary)
    stale = Path(lm).stat().st_mtime - 100
    os.utime(binary, (stale, stale))
    assert binary_lm(lm) == str(binary) and binary.stat().st_mtime > stale + 50
    size = binary.stat().st_size
    binary.write_bytes(binary.read_bytes()[:100])
    _word_search.cache_clear()
    assert BeamSearch(options, TOKENIZER, FRAME_SHIFT)(emissions) == with_binary
    assert binary.stat().st_size == size


def test_the_spelled_lexicon_is_made_once_and_made_again_when_stale_or_damaged(tmp_path, monkeypatch):
    text = ["the cat sat on the mat", "a cat sat", "the cat sat down", "my dog sat on the cat"]
    lm = str(build_arpa(text, tmp_path / "lm.arpa", order=3))
    lexicon = tmp_path / "words.lexicon"  # "mat" has a second spelling, "kat" none in the LM
    lexicon.write_text("the\tt h e\ncat\tc a t\nmat\tm a t\nmat\tm a a t\nsat\ts a t\nkat\tk a t\n")
    emissions = ambiguous_log_probs(first="m", second="c")
    searches = [
        DecodingOptions(method="beam", lm=lm, lexicon=str(lexicon), lm_weight=1.0, nbest=3),
        DecodingOptions(
            method="beam", lm=lm, lexicon=str(lexicon), lm_weight=1.0, hotwords=(("mat sat", 3),)
        ),
        DecodingOptions(method="beam", lm=lm, lm_weight=1.0, nbest=3, hotwords=(("dog mat", 1),)),
    ]

    def run() -> list:
        _word_search.cache_clear()
        return [BeamSearch(options, TOKENIZER, FRAME_SHIFT)(emissions) for options in searches]

    read = []
    monkeypatch.setattr(decoding, "read_lexicon", lambda path: read.append(path) or read_lexicon(path))
    made = run()
    assert len(read) == 2 and text_of(made[1][0]) == "the mat sat"  # boosted, from the same table
    cache = Path(f"{lexicon}.spelled.npz")
    assert cache.is_file() and Path(f"{lm}.lexicon.spelled.npz").is_file()
    assert run() == made and len(read) == 2  # both read from their spelled lexicons
    # A changed LM makes the table stale (its unigram scores); a damaged table is made again.
    os.utime(lm, (cache.stat().st_mtime - 10, cache.stat().st_mtime - 10))
    assert run() == made and len(read) == 4
    cache.write_bytes(cache.read_bytes()[:200])
    assert run() == made and len(read) == 5
    assert run() == made and len(read) == 5


def test_lexicon_errors_name_the_file_and_line(tmp_path):
    (tmp_path / "ok.lexicon").write_text("cat\tc a t\ncat\tk a t\n\ndog\td o g\n")
    assert read_lexicon(tmp_path / "ok.lexicon") == {"cat": ["cat", "kat"], "dog": ["dog"]}
    (tmp_path / "bad.lexicon").write_text("cat\tc a t\ndog\n")
    with pytest.raises(ValueError, match=r"bad.lexicon:2: no spelling"):
        read_lexicon(tmp_path / "bad.lexicon")
    (tmp_path / "odd.lexicon").write_text("caf\u00e9\tc a f \u00e9\n")
    with pytest.raises(ValueError, match="odd.lexicon: 'caf\u00e9' is spelled with '\u00e9'"):
        _word_search(str(tmp_path / "odd.lexicon"), None, tuple(TOKENIZER.tokens))
    assert _speller(tuple(TOKENIZER.tokens))("don't") == TOKENIZER.encode("don't")
    greek = _speller(("<blank>", " ", "\u03b1", "\u03b2"))  # an alphabet beyond Latin-1
    assert greek("\u03b2\u03b1") == [3, 2] and greek("\u03b1c") is None and greek(" ") is None
    (tmp_path / "greek.lexicon").write_text("\u03b1\u03b2\t\u03b1 \u03b2\n")  # beyond Latin-1 too
    with pytest.raises(ValueError, match="greek.lexicon: '\u03b1\u03b2' is spelled with '\u03b1'"):
        _word_search(str(tmp_path / "greek.lexicon"), None, tuple(TOKENIZER.tokens))


def test_a_lexicon_keeps_the_search_to_its_words(word_lm):
    options = DecodingOptions(method="beam", lm=word_lm, lm_weight=0.0)
    # "kat" is likelier in the audio, but no word of the lexicon.
    assert text_of(BeamSearch(options, TOKENIZER, FRAME_SHIFT)(ambiguous_log_probs())[0]) == "the cat sat"


def test_a_hotword_outside_the_lm_becomes_possible_and_a_boost_tips_a_close_call(word_lm):
    emissions = ambiguous_log_probs(first="k", second="c")  # the audio says "kat" a little more
    plain = DecodingOptions(method="beam", lm=word_lm, lm_weight=0.5)
    assert text_of(BeamSearch(plain, TOKENIZER, FRAME_SHIFT)(emissions)[0]) == "the cat sat"
    boosted = replace(plain, hotwords=(("Kat", 2.0),))  # normalised like transcripts
    assert boosted.hotwords == (("kat", 2.0),) and boosted.name == "beam 32 + n-gram + 1 hotwords"
    assert text_of(BeamSearch(boosted, TOKENIZER, FRAME_SHIFT)(emissions)[0]) == "the kat sat"
    # A word the LM knows: "mat" against "cat" (the LM's favourite after "the").
    emissions = ambiguous_log_probs(first="c", second="m")
    for hotwords, expected in (
        ((), "the cat sat"),
        ((("mat", 0.5),), "the cat sat"),
        ((("mat", 3.0),), "the mat sat"),
    ):
        options = replace(plain, hotwords=hotwords)
        assert text_of(BeamSearch(options, TOKENIZER, FRAME_SHIFT)(emissions)[0]) == expected, hotwords


def test_a_hotword_phrase_keeps_its_boost_only_when_said_whole(word_lm):
    emissions = ambiguous_log_probs(first="c", second="m")  # "cat" a little likelier; the LM agrees
    plain = DecodingOptions(method="beam", lm=word_lm, lm_weight=0.5)
    for hotwords, expected in (
        ((("mat sat", 3.0),), "the mat sat"),
        # Boosted alone, "mat" would win (the test above); its phrase does not go on here.
        ((("mat down", 3.0),), "the cat sat"),
        ((("mat down", 3.0), ("sat", 0.5)), "the cat sat"),
    ):
        options = replace(plain, hotwords=hotwords)
        assert text_of(BeamSearch(options, TOKENIZER, FRAME_SHIFT)(emissions)[0]) == expected, hotwords


def test_phrase_boosts_are_given_back_when_a_phrase_is_left():
    from flashlight.lib.text.decoder import ZeroLM

    lm = _boosted(ZeroLM(), [((1, 2), 1.5), ((3,), 1.0), ((2, 2, 4), 0.5)])

    def boost(words: list[int]) -> float:
        state, total = lm.start(False), 0.0
        for word in words:
            state, score = lm.score(state, word)
            total += score
        return total + lm.finish(state)[1]

    assert boost([1, 2]) == boost([1, 1, 2]) == boost([5, 1, 2, 5]) == pytest.approx(3.0)
    assert boost([1]) == boost([1, 5]) == boost([2, 2]) == boost([2, 2, 5]) == boost([]) == 0.0
    assert boost([3, 3]) == pytest.approx(2.0) and boost([1, 2, 3]) == pytest.approx(4.0)
    assert boost([2, 2, 4]) == pytest.approx(1.5) and boost([1, 2, 2, 4]) == pytest.approx(4.5)


def test_hotwords_need_an_lm_and_a_word(word_lm):
    with pytest.raises(ValueError, match="hotwords boost words of the beam search's word n-gram"):
        DecodingOptions(method="beam", hotwords=(("kat", 2.0),))
    with pytest.raises(ValueError, match="hotword '--':2.0: needs a word"):
        DecodingOptions(method="beam", lm=word_lm, hotwords=(("--", 2.0),))


def test_beam_words_carry_times_and_confidences(word_lm):
    options = DecodingOptions(method="beam", lm=word_lm, lm_weight=1.0)
    words = BeamSearch(options, TOKENIZER, FRAME_SHIFT)(ambiguous_log_probs())[0]
    assert [w.start for w in words] == [0.0, round(6 * FRAME_SHIFT, 3), round(12 * FRAME_SHIFT, 3)]
    assert words[1].confidence == pytest.approx((0.4 + 0.9 + 0.9) / 3, abs=1e-3)  # "c" was the 0.4 choice


def test_decoding_options_are_checked():
    with pytest.raises(ValueError, match="greedy or beam"):
        DecodingOptions(method="viterbi")
    with pytest.raises(ValueError, match="character LM alone searches without a lexicon"):
        DecodingOptions(method="beam", lexicon="words.lexicon", charlm="b.pt")
    for name in ("beam_size", "beam_size_token", "rescore_nbest", "nbest"):
        with pytest.raises(ValueError, match=f"{name} must be at least 1, got 0"):
            DecodingOptions(method="beam", **{name: 0})
    names = [
        DecodingOptions(method="beam", beam_size=8, lm="a.arpa", charlm="b.pt").name,
        DecodingOptions(method="beam", charlm="b.pt").name,
        DecodingOptions(method="beam", lm="a.arpa", lexicon="words.lexicon").name,
    ]
    assert names == ["beam 8 + n-gram + char LM", "beam 32 + char LM", "beam 32 + n-gram"]


def unigram_charlm(path: Path, probs: dict[str, float]) -> str:
    """A character LM file that gives each character (and the end) the same probability after
    any history: ``probs`` for the characters named, the rest of the mass shared by the others.

    All weights are zero, so the RNN's output is zero and the logits are the output bias.
    """
    lm = CharLM(CharLMConfig(hidden_size=4, num_layers=1, dropout=0.0))
    rest = (1 - sum(probs.values())) / (len(lm.tokenizer) - len(probs))
    with torch.no_grad():
        for weight in lm.parameters():
            weight.zero_()
        for i, token in enumerate(lm.tokenizer.tokens):
            lm.head.bias[i] = math.log(probs.get(token, rest))
    return str(save_charlm(lm, path))


def test_a_char_lm_rescores_the_ngram_searchs_hypotheses(word_lm, tmp_path):
    emissions = ambiguous_log_probs(first="m", second="c")  # "the mat sat" is what the audio favours
    # "the cat sat" and "the mat sat" differ in one letter: log(0.2 / 0.001) = 5.3 nats for "cat".
    charlm = unigram_charlm(tmp_path / "charlm.pt", {"c": 0.2, "m": 0.001})
    ngram = DecodingOptions(method="beam", lm=word_lm, lm_weight=0.0, nbest=2)
    both = replace(ngram, charlm=charlm, rescore_nbest=4)
    assert [text_of(w) for w in BeamSearch(ngram, TOKENIZER, FRAME_SHIFT)(emissions)] == [
        "the mat sat",
        "the cat sat",
    ]
    # The acoustic difference, log(0.5 / 0.4) = 0.22, flips at a weight of 0.22 / 5.3 = 0.04.
    for weight, expected in (
        (0.0, "the mat sat"),
        (0.03, "the mat sat"),
        (0.06, "the cat sat"),
        (1.0, "the cat sat"),
    ):
        hyps = BeamSearch(replace(both, charlm_weight=weight), TOKENIZER, FRAME_SHIFT)(emissions)
        assert len(hyps) == 2 and text_of(hyps[0]) == expected
        assert {text_of(h) for h in hyps} == {"the mat sat", "the cat sat"}
    # Alone, the same LM scores each character inside a lexicon-free search.
    alone = DecodingOptions(method="beam", charlm=charlm, charlm_weight=1.0)
    assert text_of(BeamSearch(alone, TOKENIZER, FRAME_SHIFT)(emissions)[0]) == "the cat sat"


def test_a_gzipped_ngram_lm_decodes_like_the_plain_one(word_lm, tmp_path):
    text = ["the cat sat on the mat", "a cat sat", "the cat sat down", "my dog sat on the cat"]
    gzipped = str(build_arpa(text, tmp_path / "lm.arpa.gz", order=3))
    assert gzip.open(gzipped, "rt").read() == Path(word_lm).read_text()
    emissions = ambiguous_log_probs(first="m", second="c")
    options = DecodingOptions(method="beam", lm=gzipped, lm_weight=1.0)
    assert text_of(BeamSearch(options, TOKENIZER, FRAME_SHIFT)(emissions)[0]) == "the cat sat"


def test_a_models_beam_settings_round_trip_with_the_lm_beside_it(word_lm, tmp_path):
    lm = tmp_path / "lm.arpa"
    lm.write_text(Path(word_lm).read_text())
    options = DecodingOptions(method="beam", beam_size=16, lm=str(lm), lm_weight=0.8, word_score=1.5)
    path = write_beam_defaults(tmp_path / "model.pt", options)
    assert path == tmp_path / "model.decoding.json" and json.loads(path.read_text())["lm"] == "lm.arpa"
    assert read_beam_defaults(tmp_path / "model.pt") == options
    moved = tmp_path / "moved"  # the JSON names the LM, not its folder: the pair can move
    moved.mkdir()
    for name in ("lm.arpa", "model.decoding.json"):
        (tmp_path / name).rename(moved / name)
    assert read_beam_defaults(moved / "model.pt").lm == str(moved / "lm.arpa")
    path = write_beam_defaults(tmp_path / "model.pt", options)
    assert read_beam_defaults(tmp_path / "other.pt") is None
    with pytest.raises(ValueError, match="beside the model"):
        write_beam_defaults(tmp_path / "elsewhere" / "model.pt", options)
    charlm = unigram_charlm(tmp_path / "charlm.pt", {})  # saved with the model's settings too
    both = replace(options, charlm=str(charlm), charlm_weight=0.3, rescore_nbest=8)
    path = write_beam_defaults(tmp_path / "model.pt", both)
    assert json.loads(path.read_text())["charlm"] == "charlm.pt"
    assert read_beam_defaults(tmp_path / "model.pt") == both
    with pytest.raises(ValueError, match="charlm.pt: put the LM beside the model"):
        write_beam_defaults(tmp_path / "elsewhere" / "model.pt", replace(both, lm=None, lexicon=None))
    path.write_text('{"beam_size": "wide", "lm_weight": }')
    with pytest.raises(ValueError, match="model.decoding.json: not a decoding settings file"):
        read_beam_defaults(tmp_path / "model.pt")


def test_words_too_long_for_the_frames_are_still_timed():
    log_probs = torch.full((6, len(TOKENIZER)), -3.0)  # 6 frames: "ab cd" needs 5, "abcd" 4
    for text, frames in (("ab cd", 6), ("ab cd", 4), ("abc def", 4)):
        words = align_words(log_probs[:frames], text, TOKENIZER, FRAME_SHIFT)
        assert [w.text for w in words] == text.split()
        assert all(0 <= w.start < w.end <= frames * FRAME_SHIFT + 1e-9 for w in words)
    # "abc def" cannot fit 4 frames at all: the words share them evenly, with confidence 0.
    assert [w.confidence for w in words] == [0.0, 0.0]
