"""Transcript output formats: txt, json, jsonl, srt, vtt."""

import json
import re

import pytest

from asr.decoding import Transcription, Word
from asr.writers import CUE_PAUSE, FORMATS, MAX_CUE_SECONDS, MAX_CUE_WORDS, format_results

SRT_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")
VTT_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")


def transcription(*words: tuple[str, float, float], duration: float = 10.0) -> Transcription:
    """A transcription of ``(text, start, end)`` words."""
    items = [Word(text, start, end, confidence=0.9) for text, start, end in words]
    return Transcription(" ".join(w.text for w in items), items, duration)


HELLO = transcription(("hello", 0.5, 0.9), ("world", 1.0, 1.4), duration=2.0)
GOODBYE = transcription(("good", 0.2, 0.5), ("bye", 0.6, 0.8), duration=1.0)


def seconds(hours: str, minutes: str, secs: str, millis: str) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000


def parse_srt(document: str) -> list[tuple[int, float, float, str]]:
    """SRT document -> (number, start, end, text) cues; fails on malformed blocks."""
    cues = []
    for block in document.strip("\n").split("\n\n") if document.strip() else []:
        number, timing, text = block.split("\n")
        match = SRT_TIMING.match(timing)
        assert match, f"bad SRT timing line {timing!r}"
        cues.append((int(number), seconds(*match.groups()[:4]), seconds(*match.groups()[4:]), text))
    return cues


def parse_vtt(document: str) -> list[tuple[float, float, str]]:
    """WebVTT document -> (start, end, text) cues; fails on malformed blocks."""
    header, _, body = document.partition("\n\n")
    assert header == "WEBVTT"
    cues = []
    for block in body.strip("\n").split("\n\n") if body.strip() else []:
        timing, text = block.split("\n")
        match = VTT_TIMING.match(timing)
        assert match, f"bad WebVTT timing line {timing!r}"
        cues.append((seconds(*match.groups()[:4]), seconds(*match.groups()[4:]), text))
    return cues


# txt


def test_txt_of_one_input_is_just_the_text():
    assert format_results([("a.wav", HELLO)], "txt") == "hello world\n"


def test_txt_of_several_inputs_prefixes_each_line_with_its_path():
    output = format_results([("a.wav", HELLO), ("dir/b.flac", GOODBYE)], "txt")
    assert output.splitlines() == ["a.wav: hello world", "dir/b.flac: good bye"]


# json and jsonl


def test_json_is_a_list_of_records():
    records = json.loads(format_results([("a.wav", HELLO), ("b.wav", GOODBYE)], "json"))

    assert [r["audio"] for r in records] == ["a.wav", "b.wav"]
    assert [r["text"] for r in records] == ["hello world", "good bye"]
    assert [r["duration"] for r in records] == [2.0, 1.0]
    assert records[0]["words"] == [
        {"text": w.text, "start": w.start, "end": w.end, "confidence": w.confidence} for w in HELLO.words
    ]


def test_jsonl_has_one_record_per_line_with_the_given_path():
    paths = ["a.wav", "some dir/\u00fcber clip.flac"]
    output = format_results([(paths[0], HELLO), (paths[1], GOODBYE)], "jsonl")

    lines = output.splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert [r["audio"] for r in records] == paths
    assert [r["text"] for r in records] == ["hello world", "good bye"]
    assert [[w["text"] for w in r["words"]] for r in records] == [["hello", "world"], ["good", "bye"]]


def test_json_of_a_transcription_without_words():
    (record,) = json.loads(format_results([("a.wav", Transcription(""))], "json"))
    assert record["text"] == "" and record["words"] == []


# srt and vtt


def test_srt_cues_are_numbered_and_timed_by_their_words():
    result = transcription(("hello", 0.5, 0.9), ("world", 1.0, 1.4), ("again", 4.0, 4.5))

    cues = parse_srt(format_results([("a.wav", result)], "srt"))

    assert cues == [(1, 0.5, 1.4, "hello world"), (2, 4.0, 4.5, "again")]


@pytest.mark.parametrize(
    "time, srt, vtt",
    [
        (0.0, "00:00:00,000", "00:00:00.000"),
        (1.5, "00:00:01,500", "00:00:01.500"),
        (59.999, "00:00:59,999", "00:00:59.999"),
        (61.25, "00:01:01,250", "00:01:01.250"),
        (3661.5, "01:01:01,500", "01:01:01.500"),
        (36000.0, "10:00:00,000", "10:00:00.000"),
    ],
)
def test_subtitle_timestamps(time, srt, vtt):
    result = transcription(("word", time, time + 0.5))
    assert f"\n{srt} --> " in format_results([("a.wav", result)], "srt")
    assert f"\n{vtt} --> " in format_results([("a.wav", result)], "vtt")


def test_vtt_starts_with_header_and_uses_dot_separator():
    output = format_results([("a.wav", HELLO)], "vtt")

    assert output.startswith("WEBVTT\n")
    assert parse_vtt(output) == [(0.5, 1.4, "hello world")]
    assert "," not in output


def test_vtt_cues_are_not_numbered():
    output = format_results([("a.wav", HELLO)], "vtt")
    assert not any(line.strip().isdigit() for line in output.splitlines())


def test_cue_breaks_at_a_long_pause():
    gap = CUE_PAUSE + 0.1
    result = transcription(("one", 0.0, 0.3), ("two", 0.3 + gap, 0.6 + gap))

    cues = parse_srt(format_results([("a.wav", result)], "srt"))

    assert [text for *_, text in cues] == ["one", "two"]


def test_cue_keeps_words_separated_by_a_short_pause():
    gap = CUE_PAUSE / 2
    result = transcription(("one", 0.0, 0.3), ("two", 0.3 + gap, 0.6 + gap))

    cues = parse_srt(format_results([("a.wav", result)], "srt"))

    assert [text for *_, text in cues] == ["one two"]


def test_cue_breaks_after_max_cue_words():
    step = MAX_CUE_SECONDS / (2 * (MAX_CUE_WORDS + 1))  # all words fit well inside the time limit
    words = [(f"w{i}", i * step, (i + 0.5) * step) for i in range(MAX_CUE_WORDS + 1)]

    cues = parse_srt(format_results([("a.wav", transcription(*words))], "srt"))

    assert [len(text.split()) for *_, text in cues] == [MAX_CUE_WORDS, 1]


def test_cue_never_spans_more_than_max_cue_seconds():
    length, gap = MAX_CUE_SECONDS / 4, CUE_PAUSE / 4  # long words, short pauses, few words
    words = [(f"w{i}", i * (length + gap), i * (length + gap) + length) for i in range(MAX_CUE_WORDS)]

    cues = parse_srt(format_results([("a.wav", transcription(*words))], "srt"))

    assert len(cues) > 1
    assert all(end - start <= MAX_CUE_SECONDS for _, start, end, _ in cues)
    assert all(len(text.split()) < MAX_CUE_WORDS for *_, text in cues)


def test_every_word_appears_in_exactly_one_cue_in_order():
    words = [(f"w{i}", i * 0.45, i * 0.45 + 0.3) for i in range(37)]
    cues = parse_srt(format_results([("a.wav", transcription(*words))], "srt"))
    assert " ".join(text for *_, text in cues) == " ".join(text for text, _, _ in words)
    assert [number for number, *_ in cues] == list(range(1, len(cues) + 1))


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_of_several_inputs_raise(fmt):
    with pytest.raises(ValueError, match=fmt):
        format_results([("a.wav", HELLO), ("b.wav", GOODBYE)], fmt)


@pytest.mark.parametrize("fmt", ["xml", "SRT", ""])
def test_unknown_format_raises(fmt):
    with pytest.raises(ValueError, match="unknown format"):
        format_results([("a.wav", HELLO)], fmt)


def test_srt_without_words_is_an_empty_document():
    output = format_results([("a.wav", Transcription(""))], "srt")
    assert parse_srt(output) == []
    assert output.strip() == ""


def test_vtt_without_words_is_a_header_only_document():
    output = format_results([("a.wav", Transcription(""))], "vtt")
    assert output.startswith("WEBVTT")
    assert parse_vtt(output) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_ends_with_a_newline(fmt):
    assert format_results([("a.wav", HELLO)], fmt).endswith("\n")


def test_tsv_has_a_header_and_one_row_per_word_of_every_input():
    first = transcription(("hello", 0.12, 0.5), ("world", 0.61, 1.0))
    second = transcription(("again", 2.0, 2.346))
    rows = [
        line.split("\t") for line in format_results([("a.wav", first), ("b.wav", second)], "tsv").splitlines()
    ]
    assert rows[0] == ["audio", "start", "end", "confidence", "word"]
    assert rows[1:] == [
        ["a.wav", "0.12", "0.50", "0.900", "hello"],
        ["a.wav", "0.61", "1.00", "0.900", "world"],
        ["b.wav", "2.00", "2.35", "0.900", "again"],
    ]
