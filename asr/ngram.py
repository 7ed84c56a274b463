"""Word n-gram language models for beam-search decoding: ARPA files and lexicons.

``build_arpa`` counts word n-grams in normalised sentences and estimates an interpolated
modified Kneser-Ney model (Chen & Goodman 1998), as KenLM's ``lmplz`` does.
For an n-gram ``h w`` with adjusted count ``c`` (raw counts at the highest order and for
n-grams starting with <s>; elsewhere the number of distinct words seen to the left)::

    p(w | h) = (c(h w) - D(c(h w))) / c(h .)  +  gamma(h) * p(w | h')      h' = h minus its first word
    gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / c(h .)

where ``Nk(h .)`` counts the words seen after ``h`` exactly k (or 3+) times. The unigram
level interpolates with a uniform distribution over the vocabulary, </s> and <unk>, so
<unk> gets what the discounts free up. The discounts of each order come from its
count-of-counts ``t1..t4``: ``Y = t1 / (t1 + 2 t2)``, ``Dk = k - (k + 1) Y t(k+1) / tk``.
The ARPA file stores ``log10 p(w | h)`` and, as the backoff weight of ``h``,
``log10 gamma(h)``: an interpolated model backs off to exactly ``gamma(h) p(w | h')``.

Pruning (``min_count``, as KenLM's ``--prune``) leaves out n-grams of the highest order seen
fewer times: the mass each would have had of its own, ``(c - D(c)) / c(h .)``, joins
``gamma(h)``, so the model still sums to one and those words are scored by the lower order.

``write_lexicon`` writes the spelling of each word for the beam search (flashlight's lexicon format).
"""

import gzip
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from asr.files import write_atomically
from asr.text import DEFAULT_ALPHABET, normalize_text

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
WORD_BOUNDARY = "|"  # the decoder's word separator token (sil_token): never part of a word
# Used for an order whose count-of-counts cannot give a discount in (0, k), as happens on
# tiny corpora (no n-gram seen twice, say): the magnitudes the estimate has on real text.
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
NEVER = -99.0  # log10 probability of <s>, which is a context but never predicted
_SECTION = re.compile(r"\\(\d+)-grams:")


def count_ngrams(texts: Iterable[str], order: int, alphabet: str = DEFAULT_ALPHABET) -> list[Counter]:
    """Adjusted Kneser-Ney counts of orders 1..``order``: ``counts[n - 1][(w1, ..., wn)]``.

    Every normalised, non-empty sentence is wrapped in <s> ... </s>.
    """
    top, starts = Counter(), [Counter() for _ in range(order)]
    for text in texts:
        words = normalize_text(text, alphabet).split()
        if not words:
            continue
        tokens = [BOS, *words, EOS]
        if order == 1:
            top.update((t,) for t in tokens[1:])  # <s> is never predicted
            continue
        top.update(zip(*(tokens[i:] for i in range(order)), strict=False))
        # Nothing precedes <s>, so n-grams starting with it keep their raw counts.
        for n in range(2, min(order, len(tokens) + 1)):
            starts[n - 1][tuple(tokens[:n])] += 1
    counts = [top]
    for n in range(order - 1, 0, -1):
        # Continuation count: the number of distinct words seen before the n-gram.
        lower = Counter(g[1:] for g in counts[0])
        lower.update(starts[n - 1])  # disjoint from the continuation counts
        counts.insert(0, lower)
    return counts


def discounts(counts: Counter) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from the count-of-counts of one order's counts."""
    t = Counter(counts.values())
    if t[1] == 0 or t[2] == 0:
        return FALLBACK_DISCOUNTS
    y = t[1] / (t[1] + 2 * t[2])
    estimate = [k - (k + 1) * y * t[k + 1] / t[k] if t[k] else 0.0 for k in (1, 2, 3)]
    return tuple(
        d if 0 < d < k else f for k, d, f in zip((1, 2, 3), estimate, FALLBACK_DISCOUNTS, strict=True)
    )


def estimate(counts: list[Counter], min_count: int = 1) -> tuple[list[dict], list[dict]]:
    """Interpolated modified Kneser-Ney: ``(probs, backoffs)``, both per order.

    ``probs[n - 1][ngram]`` is ``p(w | h)`` for every counted n-gram ``h w`` (and <unk>),
    except those of the highest order (above 1) counted fewer than ``min_count`` times;
    ``backoffs[n - 1][h]`` is ``gamma(h)`` for every context ``h`` of an n-gram.
    """
    probs, backoffs = [], []
    for n, ngrams in enumerate(counts, start=1):
        d1, d2, d3plus = discounts(ngrams)  # from every n-gram's count, the pruned ones included
        cut = {c: d1 if c == 1 else d2 if c == 2 else d3plus for c in set(ngrams.values())}  # D(c)
        total, freed = {}, {}  # per context h: c(h .) and D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)
        for g, c in ngrams.items():
            h = g[:-1]
            total[h] = total.get(h, 0) + c
            freed[h] = freed.get(h, 0.0) + cut[c]
        if n == len(counts) > 1 and min_count > 1:
            pruned = [g for g, c in ngrams.items() if c < min_count]
            for g in pruned:
                freed[g[:-1]] += ngrams[g] - cut[ngrams[g]]
            ngrams = Counter({g: c for g, c in ngrams.items() if c >= min_count})
        gamma = {h: freed[h] / total[h] for h in total}
        # Below the unigrams (whose g[1:] is ()) lies the uniform distribution over words + <unk>.
        lower = probs[-1] if probs else {(): 1.0 / (len(ngrams) + 1)}
        p = {g: (c - cut[c]) / total[g[:-1]] + gamma[g[:-1]] * lower[g[1:]] for g, c in ngrams.items()}
        if not probs:
            p[(UNK,)] = gamma[()] * lower[()]
        probs.append(p)
        backoffs.append(gamma)
    return probs, backoffs


def _arpa_lines(probs: list[dict], backoffs: list[dict]) -> Iterator[str]:
    """The ARPA text: log10 probabilities, then log10 backoff weights where there are any."""
    order = len(probs)
    yield "\\data\\\n"
    for n, p in enumerate(probs, start=1):
        yield f"ngram {n}={len(p) + (n == 1)}\n"  # + <s> among the unigrams
    for n, p in enumerate(probs, start=1):
        yield f"\n\\{n}-grams:\n"
        contexts = backoffs[n] if n < order else {}
        if n == 1:
            start = f"\t{math.log10(contexts[(BOS,)]):.6f}" if (BOS,) in contexts else ""
            yield f"{NEVER:.6f}\t{BOS}{start}\n"
        for g, prob in p.items():
            words = " ".join(g)
            if g in contexts:
                yield f"{math.log10(prob):.6f}\t{words}\t{math.log10(contexts[g]):.6f}\n"
            else:
                yield f"{math.log10(prob):.6f}\t{words}\n"
    yield "\n\\end\\\n"


def without_sentences(lines: Iterable[str], sentences: Iterable[str], min_words: int = 1) -> list[str]:
    """``lines`` less those that hold one of ``sentences`` of at least ``min_words`` words, as
    whole words: LM text that never saw a held-out sentence. Both must be normalised."""
    by_start: dict[tuple, list[list[str]]] = {}
    for sentence in sentences:
        words = sentence.split()
        if len(words) >= min_words:
            by_start.setdefault(tuple(words[:2]), []).append(words)

    def holds(line: str) -> bool:
        words = line.split()
        return any(
            words[i : i + len(s)] == s
            for i in range(len(words))
            for s in by_start.get(tuple(words[i : i + 2]), ())
        )

    return [line for line in lines if not holds(line)]


def build_arpa(
    texts: Iterable[str], out_path, order: int = 3, alphabet: str = DEFAULT_ALPHABET, min_count: int = 1
) -> Path:
    """Estimate an interpolated modified Kneser-Ney ``order``-gram model of ``texts`` (one
    sentence each, normalised with ``alphabet``) and write it as an ARPA file, atomically
    (gzip-compressed when ``out_path`` ends in .gz). ``min_count``: keep only the n-grams of
    the highest order seen that many times or more (2: leave out those seen once)."""
    if order < 1:
        raise ValueError(f"the n-gram order must be at least 1, got {order}")
    if min_count < 1 or (min_count > 1 and order == 1):
        raise ValueError(f"min_count prunes the highest order of 2 or more, at least 1: got {min_count}")
    counts = count_ngrams(texts, order, alphabet)
    if not counts[0]:
        raise ValueError(f"no words to build {out_path} from: every sentence was empty after normalisation")
    return _write_lines(out_path, _arpa_lines(*estimate(counts, min_count)))


def arpa_sizes(path) -> list[int]:
    """The number of n-grams of each order, read from an ARPA file's \\data\\ header."""
    sizes = []
    with _open_text(path, "r") as f:
        for line in f:
            if line.startswith("ngram "):
                sizes.append(int(line.split("=")[1]))
            elif line.startswith("\\") and sizes:
                break
    return sizes


def arpa_words(path) -> Iterator[str]:
    """The words of an ARPA file's 1-grams (<s>, </s> and <unk> included)."""
    with _open_text(path, "r") as f:
        in_unigrams = False
        for line in f:
            if line.startswith("\\"):
                if in_unigrams:
                    return
                in_unigrams = line.strip() == "\\1-grams:"
            elif in_unigrams and line.strip():
                yield line.split("\t")[1].strip()


class ArpaModel:
    """An ARPA file's n-grams in memory, scored as a back-off model (as KenLM and the beam
    search do): ``log10 p(w | h)`` is the stored value of ``h w`` if there is one, else the
    back-off weight of ``h`` plus ``log10 p(w | h')``, ``h'`` being ``h`` less its first word.
    Words the model does not know are scored as <unk>."""

    def __init__(self, path):
        self.path = Path(path)
        self.probs: dict[tuple, float] = {}
        self.backoffs: dict[tuple, float] = {}
        order = 0
        with _open_text(path, "r") as f:
            for number, line in enumerate(f, start=1):
                if line.startswith("\\"):
                    section = _SECTION.match(line)
                    order = int(section[1]) if section else 0
                    continue
                if not order or not line.strip():
                    continue
                fields = line.split()
                try:
                    if len(fields) not in (order + 1, order + 2):
                        raise ValueError(f"{len(fields)} fields in the {order}-grams")
                    words = tuple(fields[1 : order + 1])
                    self.probs[words] = float(fields[0])
                    if len(fields) == order + 2:
                        self.backoffs[words] = float(fields[-1])
                except ValueError as err:
                    problem = f"not an ARPA n-gram line ({err}): {line.strip()!r}"
                    raise ValueError(f"{path}:{number}: {problem}") from None
        if not self.probs:
            raise ValueError(f"{path}: no n-grams (not an ARPA file?)")
        self.order = max(len(g) for g in self.probs)
        self.words = {g[0] for g in self.probs if len(g) == 1} - {BOS, EOS, UNK}

    def log10_prob(self, word: str, history: tuple) -> float:
        """``log10 p(word | history)``, ``history`` the words before it (<s> first)."""
        history = history[len(history) - self.order + 1 :] if self.order > 1 else ()
        history = tuple(w if w in self.words or w == BOS else UNK for w in history)
        if word not in self.words and word != EOS:
            word = UNK
        backoff = 0.0
        while True:
            found = self.probs.get((*history, word))
            if found is not None:
                return backoff + found
            if not history:
                return backoff + self.probs.get((UNK,), NEVER)
            backoff += self.backoffs.get(history, 0.0)
            history = history[1:]


def word_perplexity(model: ArpaModel, sentences: Iterable[str], alphabet: str = DEFAULT_ALPHABET) -> dict:
    """Perplexity per word of normalised ``sentences`` (each ending with </s>, which counts as
    a word), as KenLM's ``query`` reports it: ``perplexity`` with unknown words scored as <unk>,
    ``perplexity_known`` over the known words only, and the number of ``oov`` words."""
    total = known_total = 0.0
    tokens = oov = count = 0
    for text in sentences:
        words = normalize_text(text, alphabet).split()
        if not words:
            continue
        count += 1
        history: tuple = (BOS,)
        for word in [*words, EOS]:
            score = model.log10_prob(word, history)
            total += score
            tokens += 1
            if word == EOS or word in model.words:
                known_total += score
            else:
                oov += 1
            history = (*history, word)
    if not tokens:
        raise ValueError("no words to score: every sentence was empty after normalisation")
    return {
        "sentences": count,
        "words": tokens - count,
        "oov": oov,
        "oov_rate": oov / max(tokens - count, 1),
        "perplexity": 10 ** (-total / tokens),
        "perplexity_known": 10 ** (-known_total / max(tokens - oov, 1)),
    }


def write_lexicon(words: Iterable[str], out_path) -> Path:
    """Write a lexicon for the beam search (flashlight's format), atomically.

    One line per distinct word: the word, a tab, its characters separated by spaces, e.g.
    ``don't<TAB>d o n ' t``. No word boundary token ends a spelling: a CTC recognizer emits a
    space between words but none after the last one, and the decoder puts its word separator
    between words itself. The special tokens <s>, </s> and <unk> are left out: the decoder
    adds <unk> itself and has no spelling for them.
    """

    def lines():
        seen = {BOS, EOS, UNK}
        for word in words:
            if word in seen:
                continue
            if not word or any(c.isspace() or c == WORD_BOUNDARY for c in word):
                raise ValueError(
                    f"{out_path}: cannot spell {word!r}: a word must be non-empty, without spaces or '|'"
                )
            seen.add(word)
            yield f"{word}\t{' '.join(word)}\n"

    return _write_lines(out_path, lines())


def _write_lines(path, lines: Iterable[str]) -> Path:
    def write(partial: Path) -> None:
        with _open_text(partial, "w") as f:
            f.writelines(lines)

    return write_atomically(path, write)


def _open_text(path, mode: str):
    """A text file, gzip-compressed when its name ends in .gz (the decoder reads those too)."""
    if str(path).endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")
