"""Output formats for transcripts: txt, json, jsonl, srt, vtt, tsv (one row per word)."""

import json
from dataclasses import asdict

from asr.decoding import Transcription, Word

FORMATS = ("txt", "json", "jsonl", "srt", "vtt", "tsv")
MAX_CUE_WORDS = 10  # words per subtitle cue
MAX_CUE_SECONDS = 5.0  # a cue never spans more than this
CUE_PAUSE = 0.6  # seconds of silence between words that start a new cue


def _record(audio: str, result: Transcription) -> dict:
    return {"audio": audio, **asdict(result)}


def cues(words: list[Word]) -> list[list[Word]]:
    """Group words into subtitle cues, breaking at pauses and at the size limits."""
    grouped: list[list[Word]] = []
    for word in words:
        if grouped:
            cue = grouped[-1]
            fits = len(cue) < MAX_CUE_WORDS and word.end - cue[0].start <= MAX_CUE_SECONDS
            if fits and word.start - cue[-1].end < CUE_PAUSE:
                cue.append(word)
                continue
        grouped.append([word])
    return grouped


def _timestamp(seconds: float, separator: str) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{separator}{ms % 1000:03d}"


def _subtitles(result: Transcription, vtt: bool) -> str:
    lines = ["WEBVTT", ""] if vtt else []
    for n, cue in enumerate(cues(result.words), start=1):
        start, end = (_timestamp(t, "." if vtt else ",") for t in (cue[0].start, cue[-1].end))
        if not vtt:
            lines.append(str(n))
        lines += [f"{start} --> {end}", " ".join(w.text for w in cue), ""]
    return "\n".join(lines) + "\n"


def format_results(results: list[tuple[str, Transcription]], fmt: str) -> str:
    """Render ``(audio path, transcription)`` pairs in ``fmt``; the text ends with a newline.

    txt gives one transcript per line (prefixed with the path when there are several);
    tsv one row per word: audio, start and end in seconds, confidence, word;
    srt and vtt are one subtitle document, so they take exactly one input.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    several = len(results) > 1
    if fmt in ("srt", "vtt") and several:
        raise ValueError(f"{fmt} holds the subtitles of one input; give one file or an output folder")
    if fmt == "json":
        return json.dumps([_record(a, r) for a, r in results], indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(_record(a, r)) + "\n" for a, r in results)
    if fmt == "tsv":
        rows = [
            f"{a}\t{w.start:.2f}\t{w.end:.2f}\t{w.confidence:.3f}\t{w.text}\n"
            for a, r in results
            for w in r.words
        ]
        return "audio\tstart\tend\tconfidence\tword\n" + "".join(rows)
    if fmt == "txt":
        return "".join(f"{a}: {r.text}\n" if several else f"{r.text}\n" for a, r in results)
    return _subtitles(results[0][1], vtt=fmt == "vtt")
