"""Text normalisation and the character tokenizer.

Transcripts are reduced to what a character CTC model can spell: lower-case letters,
apostrophes and single spaces. Numbers become words ("in 1984" -> "in nineteen eighty-four"
-> "in nineteen eighty four"), so the model never has to guess how a digit is read.
"""

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from num2words import num2words

DEFAULT_ALPHABET = " 'abcdefghijklmnopqrstuvwxyz"
BLANK = "<blank>"

_ORDINAL = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_MONEY = re.compile(r"([$\u00a3\u20ac])(\d+(?:,\d{3})*)(?:\.(\d\d))?\b")
# currency sign -> (unit, units, subunit, subunits)
_CURRENCY = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "\u00a3": ("pound", "pounds", "penny", "pence"),
    "\u20ac": ("euro", "euros", "cent", "cents"),
}
_SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "=": " equals "}
# Typographic apostrophes become plain ones; letters without an ASCII base get their spelling.
_CHAR_MAP = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u00df": "ss"})


def _count(n: int, one: str, many: str) -> str:
    return f"{num2words(n)} {one if n == 1 else many}"


def _money_to_words(match: re.Match) -> str:
    """$5.50 -> five dollars fifty cents"""
    unit, units, subunit, subunits = _CURRENCY[match.group(1)]
    words = _count(int(match.group(2).replace(",", "")), unit, units)
    if match.group(3) and int(match.group(3)):
        words += " " + _count(int(match.group(3)), subunit, subunits)
    return f" {words} "


def _number_to_words(match: re.Match) -> str:
    token = match.group(0)
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", token):  # 1,000,000 or 1,234.5
        token = token.replace(",", "")
    elif "," in token:  # a list such as "1,2,3": read each number
        return " ".join(num2words(int(part)) for part in re.split(r"[.,]", token))
    if token.count(".") > 1:  # a version or an address: read each part
        return " point ".join(num2words(int(part)) for part in token.split("."))
    if "." in token:  # 3.05 is read "three point zero five"
        whole, fraction = token.split(".")
        return f"{num2words(int(whole))} point " + " ".join(num2words(int(d)) for d in fraction)
    value = int(token)
    if 1100 <= value <= 2099 and value % 100 != 0 and len(token) == 4:
        return num2words(value, to="year")  # 1984 is read "nineteen eighty-four"
    return num2words(value)


def normalize_text(text: str, alphabet: str = DEFAULT_ALPHABET) -> str:
    """Lower-case, spell out numbers and symbols, and drop everything outside ``alphabet``.

    Hyphens and other punctuation separate words; apostrophes inside words are kept.
    """
    text = unicodedata.normalize("NFKC", text).translate(_CHAR_MAP)
    text = _MONEY.sub(_money_to_words, text)
    text = _ORDINAL.sub(lambda m: num2words(int(m.group(1)), to="ordinal"), text)
    text = _NUMBER.sub(lambda m: f" {_number_to_words(m)} ", text)
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    # Strip accents (cafe for café), then keep only characters the model can emit.
    text = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    text = "".join(c if c in alphabet else " " for c in text)
    # An apostrophe is only part of a word when it sits between letters (don't, o'clock).
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)
    return " ".join(text.split())


class CharTokenizer:
    """Maps normalised text to CTC token ids and back.

    Id 0 is the CTC blank; ids 1..len(alphabet) are the alphabet's characters, so the
    model's output layer has ``len(alphabet) + 1`` units.
    """

    def __init__(self, alphabet: str = DEFAULT_ALPHABET):
        if len(set(alphabet)) != len(alphabet) or " " not in alphabet:
            raise ValueError(f"alphabet must hold distinct characters including a space: {alphabet!r}")
        self.alphabet = alphabet
        self.tokens = [BLANK, *alphabet]
        self._ids = {c: i for i, c in enumerate(self.tokens)}
        self.space_id = self._ids[" "]

    @property
    def blank_id(self) -> int:
        return 0

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Normalise ``text`` and return its token ids (no blanks)."""
        return [self._ids[c] for c in normalize_text(text, self.alphabet)]

    def decode(self, ids) -> str:
        """Token ids (blanks and repeats already removed) -> text."""
        return "".join(self.tokens[i] for i in ids if i != 0).strip()


def read_text_file(path) -> Iterator[str]:
    """The lines of a UTF-8 text file, one sentence each, without their line ends.

    The file is checked now (it must exist and not be empty) and read lazily.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such text file (expected one sentence per line)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty text file (expected one sentence per line)")
    return _lines(path)


def _lines(path: Path) -> Iterator[str]:
    # Decoded line by line, so that an encoding error can say which line it is on.
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                yield raw.rstrip(b"\r\n").decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{path}: line {number} is not UTF-8 text") from None
