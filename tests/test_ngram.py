"""Word n-gram language models: Kneser-Ney estimation, the ARPA file, the lexicon."""

import random
from collections import Counter
from pathlib import Path

import pytest

from asr import ngram
from asr.cli import main
from asr.ngram import ArpaModel, build_arpa, discounts, word_perplexity, write_lexicon
from asr.text import read_text_file

CORPUS = [
    "The cat sat on the mat.",
    "The cat sat on the sofa!",
    "The cat ate the fish",
    "the dog sat on the log",
    "A cat and a dog.",
    "the cat sat",
    "The cat ran 3 times",
    "dogs don't sit on mats",
    "",
    "?!",
    "the cat sat on the mat",
]


def log10_prob(model: ArpaModel, history, word: str) -> float:
    return model.log10_prob(word, tuple(history))


def sentence_log10_prob(model: ArpaModel, words: list[str]) -> float:
    tokens = ["<s>", *words, "</s>"]
    return sum(log10_prob(model, tokens[:i], tokens[i]) for i in range(1, len(tokens)))


@pytest.fixture(scope="module")
def trigram(tmp_path_factory) -> Path:
    return build_arpa(CORPUS, tmp_path_factory.mktemp("lm") / "lm.arpa", order=3)


@pytest.mark.parametrize(("order", "min_count"), [(1, 1), (2, 1), (3, 1), (4, 1), (2, 2), (3, 2), (4, 3)])
@pytest.mark.parametrize("corpus", [CORPUS, ["just one sentence"], ["a", "a b", "b a a"]])
def test_conditional_probabilities_sum_to_one(tmp_path, order, min_count, corpus):
    model = ArpaModel(build_arpa(corpus, tmp_path / "lm.arpa", order=order, min_count=min_count))
    # KenLM needs every n-gram's prefix and suffix in the model; Kneser-Ney counts provide them.
    assert all(g[:-1] in model.probs and g[1:] in model.probs for g in model.probs if len(g) > 1)
    predicted = [g[0] for g in model.probs if len(g) == 1 and g != ("<s>",)]  # vocabulary, </s>, <unk>
    # Every context in the model, each with an unseen word in front, plus unseen ones.
    histories = {g for g in model.probs if g[-1] != "</s>"} | {("<s>",), ("zebra",), ("zebra", "cat")}
    histories |= {("zebra", *h) for h in list(histories)}
    for history in histories:
        total = sum(10 ** log10_prob(model, history, w) for w in predicted)
        assert total == pytest.approx(1.0, abs=1e-4), history


def test_arpa_header_and_special_entries(trigram):
    text = trigram.read_text()
    assert text.startswith("\\data\\\n") and text.endswith("\\end\\\n")
    model = ArpaModel(trigram)
    probs, backoffs = model.probs, model.backoffs
    for n, size in enumerate(ngram.arpa_sizes(trigram), start=1):
        assert size == sum(len(g) == n for g in probs)
    assert probs[("<s>",)] == -99 and ("<s>",) in backoffs
    assert -99 < probs[("<unk>",)] < probs[("the",)]


def test_frequent_continuation_beats_rare_one(trigram, tmp_path):
    model = ArpaModel(trigram)
    assert log10_prob(model, ["on", "the"], "mat") > log10_prob(model, ["on", "the"], "sofa")
    assert log10_prob(model, ["<s>", "the"], "cat") > log10_prob(model, ["<s>", "the"], "dog")
    # Below the top order Kneser-Ney counts left contexts, not occurrences: "the cat" only
    # follows <s>, so a trigram model's bigram p(cat | the) is no higher than p(log | the).
    bigram = ArpaModel(build_arpa(CORPUS, tmp_path / "bigram.arpa", order=2))
    assert log10_prob(bigram, ["the"], "cat") > log10_prob(bigram, ["the"], "log")


def test_pruning_leaves_out_rare_ngrams_of_the_highest_order_only(trigram, tmp_path):
    full, pruned = ArpaModel(trigram), ArpaModel(build_arpa(CORPUS, tmp_path / "pruned.arpa", min_count=2))
    kept, before = Counter(len(g) for g in pruned.probs), Counter(len(g) for g in full.probs)
    assert kept[1] == before[1] and kept[2] == before[2]
    assert ("sat", "on", "the") in pruned.probs and ("on", "the", "sofa") not in pruned.probs  # 4 times, once
    assert ("on", "the", "sofa") in full.probs
    # Its mass went to the backoff: the pruned model leaves more to words after "on the" it never saw there.
    assert log10_prob(pruned, ["on", "the"], "fish") > log10_prob(full, ["on", "the"], "fish")
    with pytest.raises(ValueError, match="min_count"):
        build_arpa(CORPUS, tmp_path / "unigram.arpa", order=1, min_count=2)


def test_text_is_normalised_and_unknown_words_are_unk(tmp_path):
    model = ArpaModel(build_arpa(["THE Cat, sat!", "in 1984...", "   "], tmp_path / "lm.arpa", order=2))
    words = {g[0] for g in model.probs if len(g) == 1}
    assert words == {"<s>", "</s>", "<unk>", "the", "cat", "sat", "in", "nineteen", "eighty", "four"}
    # An unseen word gets <unk>'s share of the unigram mass: less than a seen word's.
    assert -99 < log10_prob(model, ["the"], "zebra") < log10_prob(model, ["the"], "sat")


def test_discounts_follow_chen_and_goodman_with_a_fallback():
    counts = Counter({i: c for i, c in enumerate([1] * 10 + [2] * 4 + [3] * 2 + [4] * 1)})
    y = 10 / (10 + 2 * 4)
    assert discounts(counts) == pytest.approx((1 - 2 * y * 4 / 10, 2 - 3 * y * 2 / 4, 3 - 4 * y * 1 / 2))
    assert discounts(Counter({"a": 1, "b": 1})) == ngram.FALLBACK_DISCOUNTS  # nothing seen twice


def test_kenlm_in_flashlight_loads_and_agrees(trigram, tmp_path):
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import create_word_dict, load_words

    model = ArpaModel(trigram)
    lexicon = write_lexicon([g[0] for g in model.probs if len(g) == 1], tmp_path / "lexicon.txt")
    words = create_word_dict(load_words(str(lexicon)))
    lm = KenLM(str(trigram), words)

    def kenlm_score(sentence: list[str]) -> float:
        state, total = lm.start(False), 0.0
        for word in sentence:
            state, score = lm.score(state, words.get_index(word))
            total += score
        return total + lm.finish(state)[1]

    seen = "the cat sat on the mat".split()
    shuffled = random.Random(0).sample(seen, len(seen))
    assert kenlm_score(seen) > kenlm_score(shuffled) + 1
    for sentence in (seen, shuffled, ["zebra", "the", "cat"], ["dogs", "sat"]):
        assert kenlm_score(sentence) == pytest.approx(sentence_log10_prob(model, sentence), abs=1e-4)


def test_word_perplexity_counts_unknown_words_and_scores_them_as_unk(trigram):
    model = ArpaModel(trigram)
    seen, odd = ["the cat sat on the mat"], ["the zebra sat on the mat", "mat the on"]
    result = word_perplexity(model, seen + ["", "?!"])  # empty sentences are not scored
    assert result["sentences"] == 1 and result["words"] == 6 and result["oov"] == 0
    # Per word, </s> included: 10 ** -(log10 p(sentence) / 7).
    total = sentence_log10_prob(model, seen[0].split())
    assert result["perplexity"] == pytest.approx(10 ** (-total / 7)) == result["perplexity_known"]
    other = word_perplexity(model, odd)
    assert other["oov"] == 1 and other["oov_rate"] == pytest.approx(1 / 9)
    assert other["perplexity"] > result["perplexity"]
    # Over known words only, zebra's <unk> score is left out.
    unk = log10_prob(model, ["<s>", "the"], "zebra")
    everything = sum(sentence_log10_prob(model, s.split()) for s in odd)
    assert other["perplexity"] == pytest.approx(10 ** (-everything / 11))
    assert other["perplexity_known"] == pytest.approx(10 ** (-(everything - unk) / 10))


def test_arpa_reader_takes_any_whitespace_and_names_a_bad_line(tmp_path, trigram):
    spaced = tmp_path / "spaced.arpa"
    spaced.write_text(trigram.read_text().replace("\t", " "))
    assert ArpaModel(spaced).probs == ArpaModel(trigram).probs
    broken = tmp_path / "broken.arpa"
    lines = trigram.read_text().splitlines()
    lines[lines.index("\\2-grams:") + 1] = "-0.5\tcat"
    broken.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=rf"{broken}:\d+: not an ARPA n-gram line"):
        ArpaModel(broken)
    (tmp_path / "empty.arpa").write_text("\\data\\\n\\end\\\n")
    with pytest.raises(ValueError, match="no n-grams"):
        ArpaModel(tmp_path / "empty.arpa")


def test_asr_lm_perplexity_of_a_word_lm(tmp_path, trigram, capsys):
    (tmp_path / "text.txt").write_text("the cat sat on the mat\nthe zebra sat\n")
    assert main(["lm", "perplexity", "--lm", str(trigram), str(tmp_path / "text.txt")]) == 0
    out = capsys.readouterr().out
    assert "perplexity " in out and "per word" in out
    assert "1 of 9 words out of the vocabulary (11.11 %), 2 sentences" in out
    assert main(["lm", "perplexity", "--lm", str(tmp_path / "text.txt"), str(tmp_path / "text.txt")]) == 1


def test_lexicon_format_for_torchaudio_ctc_decoder(tmp_path, trigram):
    from flashlight.lib.text.dictionary import load_words

    path = write_lexicon(["don't", "cat", "<s>", "cat", "</s>", "<unk>"], tmp_path / "lexicon.txt")
    assert path.read_text() == "don't\td o n ' t\ncat\tc a t\n"
    assert load_words(str(path))["don't"] == [["d", "o", "n", "'", "t"]]
    with pytest.raises(ValueError, match="lexicon.txt: cannot spell 'two words'"):
        write_lexicon(["two words"], tmp_path / "lexicon.txt")


def test_write_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "lm.arpa"
    out.write_text("the old model\n")

    def failing_lines(*_):
        yield "cat"
        raise RuntimeError("disk full")

    monkeypatch.setattr(ngram, "_arpa_lines", failing_lines)
    with pytest.raises(RuntimeError, match="disk full"):
        build_arpa(CORPUS, out)
    with pytest.raises(RuntimeError, match="disk full"):
        write_lexicon(failing_lines(), out)
    assert out.read_text() == "the old model\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lm.arpa"]


def test_text_file_errors_name_the_file(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="missing.txt: no such text file"):
        read_text_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").touch()
    with pytest.raises(ValueError, match="empty.txt: empty text file"):
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt: line 2 is not UTF-8"):
        list(read_text_file(tmp_path / "latin1.txt"))
    assert main(["lm", "build", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "lm.arpa")]) == 1
    assert "empty.txt: empty text file" in capsys.readouterr().err
    assert not (tmp_path / "lm.arpa").exists()


def test_asr_lm_build_writes_the_model_and_a_summary(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("\n".join(CORPUS[:5]) + "\n")
    (tmp_path / "b.txt").write_text("\n".join(CORPUS[5:]) + "\n")
    out = tmp_path / "models" / "lm.arpa"
    texts = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    assert main(["lm", "build", *texts, "--order", "2", "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith(f"{out}: ") and " 2-grams, " in summary and summary.endswith(" s\n")
    assert len(ngram.arpa_sizes(out)) == 2


def test_held_out_sentences_of_enough_words_are_kept_out_of_the_lm_text(tmp_path, capsys):
    lines = ["we come in peace", "you come in peace and quiet", "thank you captain", "in peace"]
    assert ngram.without_sentences(lines, ["come in peace"]) == ["thank you captain", "in peace"]
    assert ngram.without_sentences(lines, ["thank you"], min_words=3) == lines  # an everyday phrase
    (tmp_path / "text.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "held.txt").write_text("Come in peace!\nThank you\n")
    out = tmp_path / "lm.arpa"
    assert main(["lm", "build", str(tmp_path / "text.txt"), "--exclude", str(tmp_path / "held.txt"),
                 "--order", "2", "--out", str(out)]) == 0  # fmt: skip
    assert "2 lines kept" in capsys.readouterr().out
    assert set(ngram.arpa_words(out)) - {"<s>", "</s>", "<unk>"} == {"thank", "you", "captain", "in", "peace"}
