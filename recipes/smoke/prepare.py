"""The smoke corpus: a few hundred short English sentences spoken by espeak-ng.

It is made locally in seconds and needs no download, so ``make demo`` and the tests can train
and evaluate a real model end to end. Sentences come from the fortunes-min Debian package;
each one is spoken with a voice, speed and pitch drawn at random (seeded).

    python -m recipes.smoke.prepare --out data/smoke [--num-train 300 --num-dev 40 --num-test 40]

writes ``audio/<split>/<id>.flac`` (16 kHz) and ``cuts_<split>.jsonl.gz`` (lhotse cut manifests)
under ``--out``. An interrupted run can be restarted: finished clips are kept.
"""

import argparse
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import CutSet

from asr.audio import SAMPLE_RATE, load_audio
from asr.progress import progress
from asr.text import normalize_text
from recipes.common import available_cores, clip_cuts, write_atomically

FORTUNES = Path("/usr/share/games/fortunes/fortunes")
SPLITS = ("train", "dev", "test")
# American and British English, each with a male and a female voice. "en" is espeak-ng's
# British voice: it ignores a variant written after "en-gb" ("en-gb+f2" sounds exactly like
# "en-gb"), but honours one after "en".
VOICES = ("en-us", "en-us+f3", "en", "en+f2")
RATES = (140, 190)  # words per minute, inclusive range
PITCHES = (35, 65)  # espeak-ng's 0-99 scale, where 50 is the voice's usual pitch
# Terminal overstriking: "_\bU" prints an underlined U. Dropping each character that is
# followed by a backspace leaves the letters a reader sees.
_OVERSTRUCK = re.compile(r"[^\x08]\x08")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class PrepareError(RuntimeError):
    """A problem fixed outside Python: a missing package or an output folder made differently."""


@dataclass(frozen=True)
class Clip:
    """One utterance: its transcript, how espeak-ng speaks it, and where its audio goes."""

    id: str
    text: str
    voice: str
    rate: int
    pitch: int
    path: Path


def _espeak() -> str:
    """Path of the espeak-ng executable; PrepareError with install instructions if absent."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise PrepareError(
            "espeak-ng is not installed: run `sudo apt-get install espeak-ng` (or `make setup` as root)"
        )
    return path


def synthesize(text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return mono float32 samples at 16 kHz.

    Args:
        text: what to say.
        voice: an espeak-ng voice, optionally with a variant (``en-us+f3``).
        rate: speed in words per minute.
        pitch: 0-99, 50 being the voice's usual pitch.

    Raises:
        PrepareError: espeak-ng is not installed.
        RuntimeError: espeak-ng failed, for example on an unknown voice or empty text.
    """
    command = [_espeak(), "--stdout", "-v", voice, "-s", str(rate), "-p", str(pitch)]
    # The text goes through stdin: as an argument, a sentence starting with "-" would be
    # taken for an option.
    result = subprocess.run(command, input=text.encode(), capture_output=True, check=False)
    # Reading stdin, espeak-ng exits with 0 even for an unknown voice: it just writes no audio.
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode(errors="replace").strip() or "no audio produced"
        raise RuntimeError(f"espeak-ng -v {voice} failed on {text!r}: {message}")
    samples, sample_rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return load_audio(samples, sample_rate=sample_rate)


def _strip_overstrike(text: str) -> str:
    """Keep the characters an overstruck line shows: "__\\b\\bUN" -> "UN"."""
    count = 1
    while count:  # "__\b\bUN" needs two passes
        text, count = _OVERSTRUCK.subn("", text)
    return text


def read_sentences(path: str | os.PathLike = FORTUNES, min_words: int = 3, max_words: int = 14) -> list[str]:
    """Normalised sentences of ``min_words`` to ``max_words`` words from a fortune file.

    Fortunes are separated by lines holding only ``%``; attribution lines (``-- Author``) are
    dropped. Sentences come in file order, each once.

    Raises:
        PrepareError: the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise PrepareError(
            f"{path} not found: run `sudo apt-get install fortunes-min` (or `make setup` as root)"
        )
    raw = _strip_overstrike(path.read_text(encoding="utf-8", errors="replace"))
    sentences: dict[str, None] = {}  # an ordered set: keeps the first occurrence
    for fortune in re.split(r"^%$", raw, flags=re.MULTILINE):
        lines = (line for line in fortune.splitlines() if not line.lstrip().startswith("--"))
        for sentence in _SENTENCE_END.split(" ".join(lines)):
            text = normalize_text(sentence)
            if min_words <= len(text.split()) <= max_words:
                sentences.setdefault(text)
    return list(sentences)


def plan_clips(out_dir: Path, counts: dict[str, int], seed: int) -> dict[str, list[Clip]]:
    """Deal shuffled sentences into disjoint splits and draw a voice, rate and pitch for each.

    Everything is drawn up front from one seeded generator, so a clip's content does not
    depend on which clips an earlier, interrupted run managed to render.
    """
    sentences = read_sentences()
    if sum(counts.values()) > len(sentences):
        raise PrepareError(
            f"{FORTUNES} has {len(sentences)} usable sentences, "
            f"fewer than the {sum(counts.values())} clips asked for"
        )
    rng = random.Random(seed)
    rng.shuffle(sentences)
    plan: dict[str, list[Clip]] = {}
    for split, count in counts.items():
        taken, sentences = sentences[:count], sentences[count:]
        plan[split] = []
        for index, text in enumerate(taken):
            clip_id = f"smoke-{split}-{index:05d}"
            voice, rate, pitch = rng.choice(VOICES), rng.randint(*RATES), rng.randint(*PITCHES)
            path = out_dir / "audio" / split / f"{clip_id}.flac"
            plan[split].append(Clip(clip_id, text, voice, rate, pitch, path))
    return plan


def _render(clip: Clip) -> None:
    """Synthesize ``clip`` and write it as 16 kHz FLAC.

    espeak-ng reads the normalised transcript rather than the original sentence, so the audio
    says exactly the label's words ("$200" would otherwise be heard as "two hundred dollars").
    """
    samples = synthesize(clip.text, clip.voice, clip.rate, clip.pitch)
    write_atomically(clip.path, lambda tmp: sf.write(tmp, samples, SAMPLE_RATE, format="FLAC"))


def _render_missing(clips: list[Clip], jobs: int) -> None:
    """Render the clips whose FLAC file does not exist yet, ``jobs`` espeak-ng processes at a
    time (threads suffice: the work happens outside Python)."""
    missing = [clip for clip in clips if not clip.path.exists()]
    if not missing:
        return
    _espeak()  # fail once with install instructions rather than once per clip
    print(f"rendering {len(missing)} clips with espeak-ng")
    for folder in {clip.path.parent for clip in missing}:
        folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(jobs) as pool:  # list() re-raises the first worker error
        list(progress(pool.map(_render, missing), total=len(missing), unit="clip", leave=False))


def _write_manifest(clips: list[Clip], path: Path) -> CutSet:
    """Write the cuts of ``clips`` (one supervision each, covering the clip) to ``path``."""
    cuts = clip_cuts((clip.id, clip.path, clip.text, clip.voice, None) for clip in clips)
    write_atomically(path, cuts.to_file)
    return cuts


def _check_settings(out_dir: Path, settings: dict[str, int]) -> None:
    """Record the settings ``out_dir`` is made with; refuse to mix in clips made otherwise.

    Clip ids are positions in the shuffled sentence list, so a FLAC rendered with another
    seed or split size would carry the wrong transcript.
    """
    path = out_dir / "settings.json"
    if not path.exists():
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(settings) + "\n"))
        return
    previous = json.loads(path.read_text())
    if previous != settings:
        raise PrepareError(
            f"{out_dir} was prepared with {previous}, not {settings}: "
            "delete it or choose another output folder"
        )


def prepare(
    out_dir: str | os.PathLike,
    num_train: int = 300,
    num_dev: int = 40,
    num_test: int = 40,
    seed: int = 0,
    num_jobs: int | None = None,
) -> dict[str, Path]:
    """Make the smoke corpus in ``out_dir`` and return its cut manifests by split name,
    rendering ``num_jobs`` clips at a time (default: the cores this process may use).

    Clips already rendered are kept, and nothing is done when all three manifests exist.
    Manifests hold absolute audio paths, so they work from any working directory.

    Raises:
        PrepareError: espeak-ng or fortunes-min is missing, or ``out_dir`` was made with
            other settings.
    """
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = dict(zip(SPLITS, (num_train, num_dev, num_test), strict=True))
    if min(counts.values()) < 0:
        raise ValueError(f"clip counts must not be negative: {counts}")
    _check_settings(out_dir, {"seed": seed, **counts})
    manifests = {split: out_dir / f"cuts_{split}.jsonl.gz" for split in SPLITS}
    if all(path.exists() for path in manifests.values()):
        print(f"{out_dir}: manifests already exist, nothing to do")
        return manifests
    plan = plan_clips(out_dir, counts, seed)
    _render_missing([clip for clips in plan.values() for clip in clips], num_jobs or available_cores())
    for split, clips in plan.items():
        cuts = _write_manifest(clips, manifests[split])
        minutes = sum(cut.duration for cut in cuts) / 60
        print(f"{split}: {len(cuts)} clips, {minutes:.1f} min of audio -> {manifests[split]}")
    return manifests


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; exits with status 1 and a one-line message on PrepareError."""
    parser = argparse.ArgumentParser(
        prog="python -m recipes.smoke.prepare",
        description="Synthesize the smoke corpus with espeak-ng and write lhotse manifests.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--num-train", type=int, default=300, help="training clips")
    parser.add_argument("--num-dev", type=int, default=40, help="development clips")
    parser.add_argument("--num-test", type=int, default=40, help="test clips")
    parser.add_argument("--seed", type=int, default=0, help="seed for sentences and voices")
    parser.add_argument(
        "--num-jobs", type=int, help="clips rendered at a time (default: the cores this process may use)"
    )
    args = parser.parse_args(argv)
    try:
        prepare(args.out, args.num_train, args.num_dev, args.num_test, args.seed, args.num_jobs)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
