"""Text normalisation and the character tokenizer."""

import pytest

from asr.text import BLANK, DEFAULT_ALPHABET, CharTokenizer, normalize_text

# Varied inputs for the invariants every normalised text must satisfy.
SAMPLES = [
    "",
    "   ",
    "Hello, World!",
    "HELLO world",
    "Don\u2019t stop \u2018believing\u2019.",
    "'Tis the dogs' bones, isn't it?",
    'He said: "OK".',
    "In 1984 there were 3,000 people; on the 3rd day 1,000,000 came.",
    "It costs $5.50 or \u00a31 or \u20ac2.00 - 50% off & free.",
    "Pi is 3.14159, version 1.2.3, items 1,2,3.",
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c9COLE",
    "tabs\tand\nnew\r\nlines  and   spaces",
    "rock-n-roll x=1+2 me@host",
    "\u00bd \u00b2 \ufb01ne \u24d0 \U0001d400",
    "!!! ??? ... --- ''' \"\"\"",
    "the 21st of May, 2nd-hand, o'clock",
    "a\u200bb\u00a0c\u2003d",
]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("HELLO World", "hello world"),
        ("Hello, world! How are you?", "hello world how are you"),
        ("well-known; semi:colon (paren) [bracket]", "well known semi colon paren bracket"),
        ("don\u2019t", "don't"),
        ("\u2018single\u2019 quotes", "single quotes"),
        ("o'clock isn't", "o'clock isn't"),
        ("'quoted' words", "quoted words"),
        ('"double" quotes', "double quotes"),
        ("the dogs' bones", "the dogs bones"),
        ("caf\u00e9", "cafe"),
        ("Na\u00efve R\u00c9SUM\u00c9", "naive resume"),
        ("  a \t b\n\nc  ", "a b c"),
        ("", ""),
        ("?!...", ""),
    ],
)
def test_normalize_text_cases_punctuation_and_accents(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("42", "forty two"),
        ("100 apples", "one hundred apples"),
        ("in 1984", "in nineteen eighty four"),
        ("the 3rd time", "the third time"),
        ("the 1st and 22nd", "the first and twenty second"),
        ("3.05", "three point zero five"),
        ("1,000,000", "one million"),
        ("10,000 people", "ten thousand people"),
        ("1,234.5", "one thousand two hundred and thirty four point five"),
    ],
)
def test_normalize_text_spells_out_numbers(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$5.50", "five dollars fifty cents"),
        ("$1", "one dollar"),
        ("\u00a31", "one pound"),
        ("\u00a32.01", "two pounds one penny"),
        ("\u20ac2.00", "two euros"),
        ("$1,000", "one thousand dollars"),
    ],
)
def test_normalize_text_reads_money(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("salt & pepper", "salt and pepper"), ("50%", "fifty percent"), ("1+1=2", "one plus one equals two")],
)
def test_normalize_text_reads_symbols(text, expected):
    assert normalize_text(text) == expected


@pytest.mark.parametrize("text", SAMPLES)
def test_normalized_text_only_holds_alphabet_characters(text):
    assert set(normalize_text(text)) <= set(DEFAULT_ALPHABET)


@pytest.mark.parametrize("text", SAMPLES)
def test_normalized_text_has_single_spaces_and_no_padding(text):
    result = normalize_text(text)
    assert "  " not in result
    assert result == result.strip()


@pytest.mark.parametrize("text", SAMPLES)
def test_normalized_text_keeps_apostrophes_only_inside_words(text):
    for word in normalize_text(text).split():
        assert not word.startswith("'") and not word.endswith("'")


@pytest.mark.parametrize("text", SAMPLES)
def test_normalize_text_is_idempotent(text):
    once = normalize_text(text)
    assert normalize_text(once) == once


def test_normalize_text_respects_a_custom_alphabet():
    assert normalize_text("Don't stop", alphabet=" abcdefghijklmnopqrstuvwxyz") == "don t stop"


# CharTokenizer


def test_blank_is_id_zero():
    tokenizer = CharTokenizer()
    assert tokenizer.blank_id == 0
    assert tokenizer.tokens[0] == BLANK


@pytest.mark.parametrize("alphabet", [DEFAULT_ALPHABET, " ab", " 'xyz"])
def test_tokenizer_length_is_alphabet_plus_blank(alphabet):
    assert len(CharTokenizer(alphabet)) == len(alphabet) + 1


def test_space_id_points_at_the_space():
    tokenizer = CharTokenizer()
    assert tokenizer.tokens[tokenizer.space_id] == " "


@pytest.mark.parametrize("text", SAMPLES)
def test_encode_decode_round_trips_normalized_text(text):
    tokenizer = CharTokenizer()
    assert tokenizer.decode(tokenizer.encode(text)) == normalize_text(text)


@pytest.mark.parametrize("text", SAMPLES)
def test_encode_never_emits_the_blank(text):
    tokenizer = CharTokenizer()
    assert all(0 < i < len(tokenizer) for i in tokenizer.encode(text))


def test_encode_normalizes_its_input():
    tokenizer = CharTokenizer()
    assert tokenizer.encode("Hello, World! 42") == tokenizer.encode("hello world forty two")


def test_encode_maps_characters_to_their_alphabet_position_plus_one():
    tokenizer = CharTokenizer(" ab")
    assert tokenizer.encode("ab ba") == [2, 3, 1, 3, 2]


def test_decode_skips_blanks():
    tokenizer = CharTokenizer(" ab")
    assert tokenizer.decode([0, 2, 0, 3, 0]) == "ab"


@pytest.mark.parametrize("alphabet", [" aab", "abc", "", "ab  "])
def test_invalid_alphabet_raises(alphabet):
    with pytest.raises(ValueError, match="alphabet"):
        CharTokenizer(alphabet)
