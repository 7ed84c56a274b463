"""Stage 1 of the synth recipe: English sentences from Debian's text packages.

Sources (all public domain or freely licensed, all offline):
- fortune-mod's English fortune files (``fortunes``, ``fortunes-min``): quips and quotations;
- the World English Bible (``sword-text-web``, read with ``mod2imp`` from ``libsword-utils``);
- WordNet's example sentences (``wordnet-base``): the quoted parts of its glosses.

The word language model also reads sentences of every length from them, and WordNet's
definitions (:func:`lm_sentences`).

Each sentence keeps two forms: ``spoken``, what the synthesizer reads (normalised words with
the sentence's commas and final punctuation, which give it phrasing and intonation), and
``text``, the transcript (``normalize_text`` of the sentence).
"""

import re
import shutil
import subprocess
from pathlib import Path

from asr.text import normalize_text

FORTUNE_DIR = Path("/usr/share/games/fortunes")
# Fortune files that are pictures, lists or dialogue scripts rather than sentences.
FORTUNE_SKIP = {"art", "ascii-art", "definitions", "linux", "linuxcookie", "perl", "startrek", "zippy"}
WORDNET_DIR = Path("/usr/share/wordnet")
BIBLE_MODULE = "engWEB2015eb"
PACKAGES = {
    "fortunes": "fortunes fortunes-min",
    "bible": "sword-text-web libsword-utils",
    "wordnet": "wordnet-base",
}

_OVERSTRUCK = re.compile(r".\x08")  # "_\bU": an underlined U on a terminal
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
_PHRASE_BREAK = re.compile(r"\s*[,;:\u2014]+\s+|\s+-+\s+")
_TAG = re.compile(r"<[^>]*>")
_NOTE = re.compile(r"<note\b.*?</note>", re.DOTALL)
_QUOTED = re.compile(r'"([^"]{10,})"')  # a WordNet example sentence
_QUOTED_ANY = re.compile(r'"[^"]*"')


class MissingPackage(RuntimeError):
    """A Debian package the recipe reads is not installed; the message says which."""


def _need(path: Path, source: str) -> None:
    if not path.exists():
        raise MissingPackage(
            f"{path} not found: run `sudo apt-get install {PACKAGES[source]}` (or `make setup`)"
        )


def fortune_paragraphs(directory: Path = FORTUNE_DIR) -> list[str]:
    """Fortunes of every English fortune file, attribution lines dropped."""
    _need(directory / "fortunes", "fortunes")
    paragraphs = []
    for path in sorted(directory.iterdir()):
        if path.suffix or path.is_dir() or path.name in FORTUNE_SKIP:
            continue  # .dat indexes, .u8 copies, subfolders of other languages
        raw = _OVERSTRUCK.sub("", path.read_text(encoding="utf-8", errors="replace"))
        for fortune in re.split(r"^%$", raw, flags=re.MULTILINE):
            lines = [line.strip() for line in fortune.splitlines()]
            paragraphs.append(" ".join(line for line in lines if line and not line.startswith("--")))
    return paragraphs


def bible_paragraphs(module: str = BIBLE_MODULE) -> list[str]:
    """Verses of the World English Bible, footnotes and markup removed."""
    if shutil.which("mod2imp") is None:
        raise MissingPackage(f"mod2imp not found: run `sudo apt-get install {PACKAGES['bible']}`")
    result = subprocess.run(["mod2imp", module], capture_output=True, text=True, check=False)
    if result.returncode != 0 or "$$$" not in result.stdout:
        raise MissingPackage(
            f"SWORD module {module} not found: run `sudo apt-get install {PACKAGES['bible']}`"
        )
    verses = []
    for block in result.stdout.split("$$$")[1:]:
        heading, _, body = block.partition("\n")
        if not re.search(r" \d+:[1-9]\d*$", heading):  # skip book/chapter introductions
            continue
        verses.append(" ".join(_TAG.sub("", _NOTE.sub("", body)).split()))
    return verses


def wordnet_glosses(directory: Path = WORDNET_DIR) -> list[str]:
    """Every gloss of WordNet's synsets: definitions, then double-quoted examples."""
    _need(directory / "data.noun", "wordnet")
    glosses = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in (directory / f"data.{part}").read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.startswith("  "):  # the licence header is indented
                glosses.append(line.partition(" | ")[2])
    return glosses


def wordnet_examples(directory: Path = WORDNET_DIR) -> list[str]:
    """Example sentences: the double-quoted parts of WordNet glosses."""
    return [e for gloss in wordnet_glosses(directory) for e in _QUOTED.findall(gloss)]


def wordnet_definitions(directory: Path = WORDNET_DIR) -> list[str]:
    """Definitions: WordNet glosses without their examples, one per ``;``-separated part."""
    parts = (p for gloss in wordnet_glosses(directory) for p in _QUOTED_ANY.sub("", gloss).split(";"))
    return [p.strip() for p in parts if p.strip()]


def sentences(paragraphs: list[str], min_words: int = 3, max_words: int = 20) -> list[tuple[str, str]]:
    """(spoken, text) pairs of the paragraphs' sentences with min..max words."""
    pairs = []
    for paragraph in paragraphs:
        for sentence in _SENTENCE_END.split(paragraph):
            text = normalize_text(sentence)
            if not min_words <= len(text.split()) <= max_words:
                continue
            end = sentence.rstrip("\"')] ")[-1:]
            phrases = (normalize_text(p) for p in _PHRASE_BREAK.split(sentence))
            spoken = ", ".join(p for p in phrases if p) + (end if end in ".!?" else ".")
            # Fall back to the bare transcript where splitting at punctuation changed the words.
            pairs.append((spoken if normalize_text(spoken) == text else text + ".", text))
    return pairs


def read_all() -> dict[str, list[tuple[str, str]]]:
    """Sentences by source name."""
    return {
        "fortunes": sentences(fortune_paragraphs()),
        "bible": sentences(bible_paragraphs()),
        "wordnet": sentences(wordnet_examples()),
    }


def lm_sentences() -> list[str]:
    """Transcripts for the word language model: every sentence of the three sources whatever
    its length (the corpus speaks those of 3-20 words), and WordNet's definitions."""
    paragraphs = fortune_paragraphs() + bible_paragraphs() + wordnet_examples() + wordnet_definitions()
    found = (normalize_text(s) for p in paragraphs for s in _SENTENCE_END.split(p))
    return [t for t in found if t]
