"""CTC decoding: per-frame log-probabilities -> text, with word times and confidences."""

import gzip
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from asr.files import write_atomically
from asr.text import CharTokenizer, normalize_text


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


def align_words(
    log_probs: torch.Tensor, text: str, tokenizer: CharTokenizer, frame_shift: float
) -> list[Word]:
    """The words of ``text``, timed by the CTC forced alignment of its characters.

    Args:
        log_probs: (T, V) log-probabilities of the utterance's real frames.

    A word starts at the first frame of its first character, as in :func:`greedy_decode`; a
    character's confidence is its mean posterior over the frames aligned to it. A lexicon
    search may choose words whose letters and spaces need more frames than there are (CTC
    needs one per character, and one more between repeated ones); their letters are then
    aligned without the spaces, and when even that does not fit, the words share the frames
    evenly with confidence 0.
    """
    from torchaudio.functional import forced_align, merge_tokens

    words = text.split()
    frames = log_probs.shape[0]
    for chars in (" ".join(words), "".join(words)):
        ids = tokenizer.encode(chars)
        if not ids:
            return []
        if len(ids) + sum(a == b for a, b in zip(ids, ids[1:], strict=False)) <= frames:
            break
    else:
        step = frames / len(words)
        return [
            Word(w, round(i * step * frame_shift, 3), round((i + 1) * step * frame_shift, 3), 0.0)
            for i, w in enumerate(words)
        ]
    aligned, scores = forced_align(log_probs[None].float(), torch.tensor([ids]), blank=tokenizer.blank_id)
    spans = merge_tokens(aligned[0], scores[0].exp())
    if " " not in chars:  # put the spaces back: each word takes as many spans as it has letters
        ends = [sum(len(w) for w in words[: i + 1]) for i in range(len(words))]
        spans = [x for i, span in enumerate(spans) for x in ([span, None] if i + 1 in ends else [span])]
        tokens = [tokenizer.space_id if x is None else x.token for x in spans]
        starts = [-1 if x is None else x.start for x in spans]
        probs = [0.0 if x is None else x.score for x in spans]
        return words_from_tokens(tokens, starts, probs, tokenizer, frame_shift)
    return words_from_tokens(
        [s.token for s in spans], [s.start for s in spans], [s.score for s in spans], tokenizer, frame_shift
    )


@dataclass(frozen=True)
class DecodingOptions:
    """How output frames become words: ``greedy`` needs nothing else; ``beam`` uses the rest.

    The beam search takes a word n-gram (``lm``), a character LM (``charlm``), both or neither.
    The n-gram scores words inside the search; the character LM alone scores each character
    inside it (shallow fusion); with both, the character LM rescores the whole text of each of
    the n-gram search's ``rescore_nbest`` hypotheses.
    """

    method: str = "greedy"  # greedy | beam
    beam_size: int = 32  # hypotheses kept after each frame
    beam_size_token: int | None = None  # tokens tried at each frame: the N likeliest (None: all)
    beam_threshold: float = 25.0  # hypotheses scoring this far (natural log) below the best are dropped
    lm: str | None = None  # word n-gram LM (ARPA, `asr lm build`); decoding keeps to its words
    lexicon: str | None = None  # words allowed (flashlight lexicon); default with an LM: the LM's words
    charlm: str | None = None  # character RNN LM file (`asr lm export`); alone, it spells words freely
    lm_weight: float = 0.5  # weight of the n-gram's log-probability (log10, as KenLM gives it)
    word_score: float = 0.0  # added per word: more words against fewer
    charlm_weight: float = 0.5  # weight of the character LM's log-probability (natural log)
    rescore_nbest: int = 16  # with both LMs: the n-gram search's hypotheses the character LM rescores
    nbest: int = 1  # hypotheses returned per utterance (the best first)
    # (phrase, boost): each word that goes on with the phrase scores ``boost`` more (natural
    # log, as the acoustic scores); a phrase left unfinished gives it back, so only the whole
    # phrase keeps it. Words outside the LM's join the lexicon.
    hotwords: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        hotwords = []
        for phrase, boost in self.hotwords:
            words = normalize_text(phrase).split()
            if not words or not math.isfinite(float(boost)):
                raise ValueError(
                    f"hotword {phrase!r}:{boost}: needs a word of the alphabet and a finite boost"
                )
            hotwords.append((" ".join(words), float(boost)))
        object.__setattr__(self, "hotwords", tuple(hotwords))  # also from JSON's lists
        if self.hotwords and (self.method != "beam" or not self.lm or self.lm_weight <= 0):
            raise ValueError(
                "hotwords boost words of the beam search's word n-gram: they need method beam, an LM "
                "(lm) and a positive lm_weight"
            )
        if self.method not in ("greedy", "beam"):
            raise ValueError(f"decoding method must be greedy or beam, got {self.method!r}")
        if self.charlm and self.lexicon and not self.lm:
            raise ValueError(
                "a character LM alone searches without a lexicon (it scores characters, not words); "
                "add a word n-gram LM (lm) to keep to the lexicon and rescore its hypotheses"
            )
        for name in ("beam_size", "beam_size_token", "rescore_nbest", "nbest"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def name(self) -> str:
        """A short description for tables: "greedy", "beam 32 + n-gram + char LM", ..."""
        if self.method == "greedy":
            return "greedy"
        return (
            f"beam {self.beam_size}"
            + (" + n-gram" if self.lm else "")
            + (" + char LM" if self.charlm else "")
            + (f" + {len(self.hotwords)} hotwords" if self.hotwords else "")
        )


class BeamSearch:
    """CTC prefix beam search (flashlight-text's decoders) with optional language models.

    A word n-gram LM needs a lexicon: the search then spells only its words. A character LM
    alone scores each character as it is emitted, so any spelling stays possible; beside an
    n-gram it rescores the n-gram search's hypotheses: beam score + ``charlm_weight`` x the
    log-probability of the hypothesis's text, end of sentence included.

    The decoders are built here rather than through torchaudio's ``ctc_decoder`` wrapper,
    which read the lexicon twice and rebuilt the spelling trie for every search: the word
    dictionary, LM and trie are made once per lexicon and LM (:func:`_word_search`) and
    shared by searches with other weights (``asr lm tune``'s grid, ``asr serve``).
    """

    def __init__(self, options: DecodingOptions, tokenizer: CharTokenizer, frame_shift: float):
        from flashlight.lib.text.decoder import (
            CriterionType,
            LexiconDecoder,
            LexiconDecoderOptions,
            LexiconFreeDecoder,
            LexiconFreeDecoderOptions,
            ZeroLM,
        )

        from asr.charlm import CharLMScorer, load_charlm

        self.tokenizer, self.frame_shift, self.options = tokenizer, frame_shift, options
        # The flashlight decoder keeps the search's state between its steps: one search at a
        # time, when threads share it (asr serve's workers).
        self.lock = threading.Lock()
        self.lexicon = bool(options.lexicon or options.lm)
        # The decoder's tokens are our ids: the blank first, the space its word separator.
        self.blank, space = tokenizer.blank_id, tokenizer.space_id
        beam_size_token = options.beam_size_token or len(tokenizer)
        self.charlm = load_charlm(options.charlm) if options.charlm else None
        self.nbest = options.nbest
        if self.lexicon:
            lexicon = options.lexicon or str(_lexicon_of(options.lm))
            # Each hotword phrase's words and boost, in the LM's units (the search multiplies
            # them by lm_weight).
            phrases = tuple(
                (tuple(phrase.split()), boost / options.lm_weight) for phrase, boost in options.hotwords
            )
            self.words, lm, trie = _word_search(lexicon, options.lm, tuple(tokenizer.tokens), phrases)
            if self.charlm:
                self.nbest = max(self.nbest, options.rescore_nbest)
            settings = LexiconDecoderOptions(
                beam_size=options.beam_size, beam_size_token=beam_size_token,
                beam_threshold=options.beam_threshold, lm_weight=options.lm_weight if options.lm else 0.0,
                word_score=options.word_score, unk_score=float("-inf"), sil_score=0.0, log_add=False,
                criterion_type=CriterionType.CTC,
            )  # fmt: skip
            unk = self.words.get_index(UNK_WORD)
            self.decoder = LexiconDecoder(settings, trie, lm, space, self.blank, unk, [], False)
        else:
            if self.charlm:
                lm = CharLMScorer(self.charlm, ["-", *tokenizer.tokens[1:]])
                lm_weight = options.charlm_weight
            else:
                lm, lm_weight = ZeroLM(), 0.0
            settings = LexiconFreeDecoderOptions(
                beam_size=options.beam_size, beam_size_token=beam_size_token,
                beam_threshold=options.beam_threshold, lm_weight=lm_weight, sil_score=0.0, log_add=False,
                criterion_type=CriterionType.CTC,
            )  # fmt: skip
            self.decoder = LexiconFreeDecoder(settings, lm, space, self.blank, [])
        self.lm = lm  # the decoder holds a reference the Python side must keep alive

    def _search(self, log_probs: torch.Tensor) -> list[tuple[list[int], list[str], float]]:
        """(tokens without blanks and repeats, words, score) of the ``nbest`` best hypotheses."""
        with self.lock:
            results = self.decoder.decode(log_probs.data_ptr(), log_probs.shape[0], log_probs.shape[1])
        hyps = []
        for result in results[: self.nbest]:
            tokens = [t for t, _ in itertools.groupby(result.tokens) if t != self.blank]
            words = [self.words.get_entry(w) for w in result.words if w >= 0] if self.lexicon else []
            hyps.append((tokens, words, result.score))
        return hyps

    def __call__(self, log_probs: torch.Tensor) -> list[list[Word]]:
        """(T, V) log-probabilities of one utterance -> up to ``nbest`` word sequences, best first."""
        log_probs = log_probs.float().contiguous()
        hyps = self._search(log_probs)
        # With a lexicon the decoder's words are the transcript: its tokens may run two words
        # together and end in an unfinished one.
        texts = [
            " ".join(words if self.lexicon else self.tokenizer.decode(tokens).split())
            for tokens, words, _ in hyps
        ]
        if self.charlm and self.lexicon and texts:
            from asr.charlm import sentence_log_probs

            scores = torch.tensor([score for _, _, score in hyps])
            scores += self.options.charlm_weight * sentence_log_probs(self.charlm, texts)
            texts = [texts[i] for i in scores.argsort(descending=True, stable=True).tolist()]
        return [
            align_words(log_probs, text, self.tokenizer, self.frame_shift)
            for text in texts[: self.options.nbest]
        ]


def _lexicon_of(lm: str) -> Path:
    """A lexicon of the LM's words, written once beside it (``<lm>.lexicon``, see :func:`_beside`)
    and again when the LM is newer."""
    from asr.ngram import arpa_words, write_lexicon

    path = _beside(lm, ".lexicon")
    if not path.exists() or path.stat().st_mtime < Path(lm).stat().st_mtime:
        write_lexicon(arpa_words(lm), path)
    return path


def _beside(lm: str, suffix: str) -> Path:
    """Where a file made from the LM goes: ``<lm><suffix>``, or the user's cache folder when
    the LM's folder is read-only (an installed package's model)."""
    path = Path(f"{lm}{suffix}")
    if not os.access(path.parent, os.W_OK):
        key = hashlib.sha1(str(Path(lm).resolve()).encode()).hexdigest()[:16]
        path = Path.home() / ".cache" / "asr" / f"{key}{suffix}"
    return path


UNK_WORD = "<unk>"


def read_lexicon(path) -> dict[str, list[str]]:
    """The spellings of each word of a flashlight lexicon (``word<TAB>c h a r s`` lines), in
    the file's order, each spelling as the string of its characters."""
    lexicon: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()  # twice as fast as reading line by line
    for number, line in enumerate(lines, start=1):
        word, _, spelling = line.partition("\t")
        if not word.strip():
            continue
        if not spelling.strip():
            raise ValueError(f"{path}:{number}: no spelling after the word (expected word<TAB>c h a r s)")
        lexicon.setdefault(word, []).append(spelling.replace(" ", ""))
    if not lexicon:
        raise ValueError(f"{path}: an empty lexicon")
    return lexicon


@lru_cache(maxsize=4)
def _word_search(
    lexicon: str,
    lm: str | None,
    tokens: tuple[str, ...],
    phrases: tuple[tuple[tuple[str, ...], float], ...] = (),
):
    """What a lexicon search needs, built once whatever the weights: the word dictionary (the
    lexicon's words in order, the hotwords it lacks, then <unk>), the n-gram LM (or none) and
    the trie of spellings, each word's unigram score smeared over its prefixes. Hotword
    phrases (``(words, boost in LM units)``) are scored by the LM (:func:`_boosted`), and each
    of their words scores its boost more in the trie, so that the search's look-ahead favours
    their prefixes too. The lexicon's spellings in token ids and their unigram scores
    (:func:`_spell_lexicon`) are kept beside the lexicon (``<lexicon>.spelled.npz``, or in the
    user's cache folder) and made again when the lexicon, LM or tokens change: read from there,
    the trie of 67,000 words builds in about half the time."""
    from flashlight.lib.text.decoder import SmearingMode, Trie, ZeroLM
    from flashlight.lib.text.dictionary import Dictionary

    source = _source_key(lexicon, lm, tokens)
    cache = _beside(lexicon, ".spelled.npz")
    table = _read_spelled(cache, source)
    spellings = None if table else read_lexicon(lexicon)
    lexicon_words = table.words if table else list(spellings)
    bonus: dict[str, float] = {}
    for phrase, boost in phrases:
        for word in phrase:
            bonus[word] = max(bonus.get(word, -math.inf), boost)
    known = set(lexicon_words)
    extra = [word for word in bonus if word not in known]
    words = Dictionary([*lexicon_words, *extra, *([] if UNK_WORD in known else [UNK_WORD])])
    words.set_default_index(words.get_index(UNK_WORD))
    model = _kenlm(lm, words) if lm else ZeroLM()
    if table is None:
        table = _spell_lexicon(lexicon, spellings, model, tokens)
        try:
            _write_spelled(cache, source, table)
        except OSError:
            pass  # a folder it cannot write to: built again next time
    trie = Trie(len(tokens), tokens.index(" "))
    flat, ends = table.ids.tolist(), table.ends.tolist()
    scores = table.scores.tolist()
    for word, boost in bonus.items():
        if word in known:
            scores[words.get_index(word)] += boost
    for index, begin, end in zip(table.owners.tolist(), [0, *ends[:-1]], ends, strict=True):
        trie.insert(flat[begin:end], index, scores[index])
    spell = _speller(tokens)
    start = model.start(False)
    for word in extra:  # hotwords outside the lexicon, spelled as written
        ids = spell(word)
        if ids is None:
            raise ValueError(f"hotword {word!r}: spelled with characters that are not the model's tokens")
        index = words.get_index(word)
        trie.insert(ids, index, model.score(start, index)[1] + bonus[word])
    trie.smear(SmearingMode.MAX)
    if phrases:
        model = _boosted(
            model, [(tuple(words.get_index(w) for w in phrase), boost) for phrase, boost in phrases]
        )
    return words, model, trie


@dataclass(frozen=True)
class _Spelled:
    """A lexicon for the search's trie: its words in order, each spelling's token ids end to end
    (``ids``; spelling ``i`` ends at ``ends[i]``) and word index (``owners``), and each word's
    unigram score in the LM (0 without one)."""

    words: list[str]
    ids: np.ndarray
    ends: np.ndarray
    owners: np.ndarray
    scores: np.ndarray


def _spell_lexicon(lexicon: str, spellings: dict[str, list[str]], model, tokens: tuple[str, ...]) -> _Spelled:
    """Spell every word of a lexicon (``spellings``, read from the file ``lexicon``) in token ids
    and score it alone with ``model``, whose word ids are the lexicon's words in order."""
    spell = _speller(tokens)
    start = model.start(False)
    ids, ends, owners = [], [], []
    for index, (word, forms) in enumerate(spellings.items()):
        for form in forms:
            spelled = spell(form)
            if spelled is None:
                unknown = next(c for c in form if spell(c) is None)
                raise ValueError(
                    f"{lexicon}: {word!r} is spelled with {unknown!r}, not one of the model's tokens"
                )
            ids += spelled
            ends.append(len(ids))
            owners.append(index)
    scores = [model.score(start, index)[1] for index in range(len(spellings))]
    return _Spelled(
        list(spellings), np.array(ids, dtype=np.uint8 if len(tokens) <= 256 else np.int32),
        np.array(ends, dtype=np.int64),
        np.array(owners, dtype=np.int32), np.array(scores, dtype=np.float64),
    )  # fmt: skip


def _source_key(lexicon: str, lm: str | None, tokens: tuple[str, ...]) -> str:
    """What a spelled lexicon was made from: the lexicon and LM files (path, size, modification
    time) and the model's tokens; a cache made from anything else is stale."""

    def file(path):
        stat = Path(path).stat()
        return f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"

    return json.dumps([file(lexicon), file(lm) if lm else None, list(tokens)])


def _write_spelled(path: Path, source: str, table: _Spelled) -> None:
    """Store a spelled lexicon (:class:`_Spelled`) and what it was made from, atomically."""

    def write(partial: Path) -> None:
        with open(partial, "wb") as f:
            np.savez(
                f, source=np.array(source), words=np.frombuffer("\n".join(table.words).encode(), np.uint8),
                ids=table.ids, ends=table.ends, owners=table.owners, scores=table.scores,
            )  # fmt: skip

    write_atomically(path, write)


def _read_spelled(path: Path, source: str) -> _Spelled | None:
    """The spelled lexicon stored at ``path`` if it was made from ``source``; None when there
    is none, it is stale, or it cannot be read (then it is made again)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["source"]) != source:
                return None
            words = stored["words"].tobytes().decode().split("\n")
            table = _Spelled(words, stored["ids"], stored["ends"], stored["owners"], stored["scores"])
    except Exception:  # whatever a damaged file raises (zip, array or text errors): made again
        return None
    consistent = (
        len(table.ends) == len(table.owners)
        and len(table.scores) == len(words)
        and (not len(table.ends) or table.ends[-1] == len(table.ids))
    )
    return table if consistent else None


def _boosted(model, phrases: list[tuple[tuple[int, ...], float]]):
    """``model`` (a flashlight LM) with hotword phrases (word ids, boost): each word that goes on
    with a phrase scores the phrase's boost more, and a phrase left unfinished (by another word
    or the end) takes back what its words scored, so that only whole phrases keep their boost
    and a common first word ("the") is not favoured alone. Phrases are matched as they overlap
    (after "new new york", "new york" is whole). Flashlight calls ``score`` each time a
    hypothesis ends a word: a Python call there, only when there are hotwords."""
    from flashlight.lib.text.decoder import LM, LMState

    # Every beginning of a phrase, with what its words have scored (the most, when phrases share it).
    begun: dict[tuple[int, ...], float] = {}
    for phrase, boost in phrases:
        for k in range(1, len(phrase) + 1):
            begun[phrase[:k]] = max(begun.get(phrase[:k], -math.inf), k * boost)
    whole = {phrase for phrase, _ in phrases}

    class Boosted(LM):
        """Its states stand for the model's state, the phrase begun last and what it scored
        that is not kept yet; they are a tree of the words heard (``LMState.child``), as the
        model's own are, and each keeps the score of the word that led to it: the search asks
        for the same word after the same state at many frames. One search at a time per thread."""

        def __init__(self):
            LM.__init__(self)
            self.model = model  # kept alive with its states
            self.local = threading.local()

        def start(self, start_with_nothing):
            state = LMState()
            self.local.states = {state: (model.start(start_with_nothing), (), 0.0, 0.0)}
            return state

        def score(self, state, word):
            states = self.local.states
            child = state.child(word)
            if (known := states.get(child)) is not None:
                return child, known[3]
            inner, before, owed, _ = states[state]
            inner, score = model.score(inner, word)
            now = (*before, word)
            while now and now not in begun:  # the longest end of the words heard that begins a phrase
                now = now[1:]
            if len(now) == len(before) + 1:  # the phrase goes on
                gain = begun[now] - begun.get(before, 0.0)
                score, owed = score + gain, owed + gain
            else:  # it was left: what it scored goes back; another may have begun
                gain = begun.get(now, 0.0)
                score, owed = score - owed + gain, gain
            if now in whole:
                owed = 0.0
            states[child] = (inner, now, owed, score)
            return child, score

        def finish(self, state):
            inner, _, owed, _ = self.local.states[state]
            _, score = model.finish(inner)
            return state, score - owed

    return Boosted()


def _speller(tokens: tuple[str, ...]):
    """A function from a spelling to its token ids (None if a character is no token); no word
    spells the blank (id 0) or the space. Latin-1 alphabets of fewer than 255 tokens go
    through ``bytes.translate`` rather than a dict lookup per character: the search's trie is
    built from 67,000 words at start-up."""
    ids = {t: i for i, t in enumerate(tokens) if i and t != " "}
    if len(tokens) >= 255 or any(ord(t) > 255 for t in ids):
        return lambda form: [ids[c] for c in form] if all(c in ids for c in form) else None
    table = bytearray([255]) * 256
    for t, i in ids.items():
        table[ord(t)] = i

    def spell(form: str) -> list[int] | None:
        try:
            found = form.encode("latin-1").translate(table)
        except UnicodeEncodeError:
            return None
        return None if 255 in found else list(found)

    return spell


def _kenlm(lm: str, words):
    """The n-gram LM, its word ids those of ``words``; KenLM's binary form when there is one
    (see :func:`binary_lm`), which loads in a fraction of the time an ARPA file takes."""
    from flashlight.lib.text.decoder.kenlm import KenLM

    if not Path(lm).is_file():
        raise FileNotFoundError(f"{lm}: no such language model file")
    path = binary_lm(lm)
    try:
        with _without_kenlm_notes():
            return KenLM(path, words)
    except RuntimeError as err:  # KenLM's message: where in its code, then what was wrong
        if path != lm:  # a damaged cache: rebuilt next time, the ARPA file now
            Path(path).unlink(missing_ok=True)
            return _kenlm(lm, words)
        raise ValueError(f"{lm}: not a readable ARPA language model ({str(err).splitlines()[-1]})") from None


def build_binary_tool() -> str | None:
    """KenLM's ``build_binary`` (``make setup`` builds it into the environment), if present."""
    beside = Path(sys.executable).with_name("build_binary")
    return str(beside) if beside.is_file() else shutil.which("build_binary")


def binary_lm(lm: str) -> str:
    """KenLM's binary trie of an ARPA file, made once beside it (``<lm>.binary``, or in the
    user's cache folder when that folder is read-only) and remade when the ARPA file is newer;
    ``lm`` itself when ``build_binary`` is not installed or the file is not ARPA."""
    path = _beside(lm, ".binary")
    if path.is_file() and path.stat().st_mtime >= Path(lm).stat().st_mtime:
        return str(path)
    tool = build_binary_tool()
    if tool is None or not _is_arpa(lm):
        return lm

    def build(partial: Path) -> None:
        result = subprocess.run([tool, "-s", "trie", lm, str(partial)], capture_output=True, text=True)
        if result.returncode != 0:
            raise ValueError(f"{lm}: build_binary failed: {result.stderr.strip().splitlines()[-1:]}")

    try:
        write_atomically(path, build)
    except ValueError:
        return lm  # KenLM reads the ARPA file and names what is wrong with it
    return str(path)


def _is_arpa(lm: str) -> bool:
    opener = gzip.open if lm.endswith(".gz") else open
    try:
        with opener(lm, "rb") as f:
            return f.read(64).lstrip().startswith(b"\\data\\")
    except OSError:
        return False


# What KenLM writes to file descriptor 2 while it reads an ARPA file, each time: a note that a
# binary file would load faster (KenLM's build_binary; none here), the path, a progress bar.
KENLM_NOTES = re.compile(r"Loading the LM will be faster if you build a binary file\.|Reading .*|[-0-9]+|\**")


@contextmanager
def _without_kenlm_notes():
    """Run a block with file descriptor 2 held back, then write back all of it but KenLM's
    loading notes (:data:`KENLM_NOTES`): warnings and errors still reach stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not KENLM_NOTES.fullmatch(line.strip())))


LM_FILES = ("lm", "charlm")  # the options naming a file that a model's settings keep beside it


def beam_defaults_path(model_path) -> Path:
    """Where a model file's tuned beam-search settings live: ``<model>.decoding.json``."""
    return Path(model_path).with_suffix(".decoding.json")


def read_beam_defaults(model_path) -> DecodingOptions | None:
    """The beam search a model file was tuned with (``asr lm tune --save``), if any.

    The LM paths are stored relative to the JSON file, so a model folder can move as a whole.
    """
    path = beam_defaults_path(model_path)
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
        options = DecodingOptions(**{**settings, "method": "beam"})
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a decoding settings file ({err})") from None
    beside = {key: str(path.parent / name) for key in LM_FILES if (name := getattr(options, key))}
    return replace(options, **beside)


def write_beam_defaults(model_path, options: DecodingOptions) -> Path:
    """Store ``options`` as the beam search of a model file; its LMs must sit beside the model."""
    settings = beam_defaults(model_path, options)
    path = beam_defaults_path(model_path)
    return write_atomically(path, lambda partial: partial.write_text(json.dumps(settings, indent=2) + "\n"))


def beam_defaults(model_path, options: DecodingOptions) -> dict:
    """The settings :func:`write_beam_defaults` stores, LMs named relative to the model; a
    ValueError if an LM does not sit beside the model (checkable before a long tuning run)."""
    path = beam_defaults_path(model_path)
    settings = asdict(options)
    for key in LM_FILES:
        if settings[key]:
            lm = Path(settings[key]).resolve()
            if lm.parent != path.parent.resolve():
                raise ValueError(
                    f"{settings[key]}: put the LM beside the model ({path.parent}) to save it with it"
                )
            settings[key] = lm.name
    del settings["method"], settings["nbest"]
    return settings
