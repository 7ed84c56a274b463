"""tuxpaint: a small second test set of people's speech, Tux Paint's spoken stamp descriptions.

    python -m recipes.tuxpaint.prepare --out data/tuxpaint [--corpus-dir DIR]

Debian's ``tuxpaint-stamps-default`` (main, GPL-2+) gives many of its picture stamps a spoken
English description (``<stamp>_desc.ogg``: "A red kangaroo.", "Two wild boars."), recorded by
the project's contributors at 44.1 or 8 kHz; the stamp's ``<stamp>.txt`` holds the text on its
first line (translations follow as ``<locale>.utf8=...`` lines). About 65 clips, a minute of
speech: short, but other people than the uqm actors, and rare words (dromedary, wapiti, zebu).
A test set only (``cuts_test_tuxpaint.jsonl.gz``); nothing of it is trained or tuned on.
Stages, each resumable:

1. fetch      the package through the private apt configuration of ``recipes.debian``
              (the machine's own sources are not touched) -> ``debian/root``; with
              ``--corpus-dir`` an unpacked copy (or an installed ``/``) is used instead
2. manifests  one cut per description clip with its normalised English text, speaker
              unknown -> ``cuts_test_tuxpaint.jsonl.gz``, ``skipped.txt`` (clips without a text
              file or an English line, unreadable clips)
"""

from pathlib import Path

from asr.text import normalize_text
from recipes import common, debian

PACKAGE = "tuxpaint-stamps-default"
STAMPS = "usr/share/tuxpaint/stamps"
SPLIT = "test_tuxpaint"
DESCRIPTION = "_desc.ogg"  # the English description; other languages are _desc_<locale>.ogg


def stage_fetch(out: Path) -> Path:
    """The package, downloaded and unpacked under ``out/debian/root`` (once)."""
    return debian.download([PACKAGE], out / "debian", out.parent / "apt")


def english_line(text: str) -> str | None:
    """The English description of a stamp's ``.txt``: its first line, unless that is a translation."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return None if not first or ".utf8=" in first else first


def description_clips(stamps: Path, skipped: common.SkipLog) -> list[tuple[str, Path, str, str, dict]]:
    """``(id, clip, text, speaker, custom)`` of every English description clip under ``stamps``."""
    clips = []
    for clip in sorted(stamps.rglob(f"*{DESCRIPTION}")):
        stamp = clip.name.removesuffix(DESCRIPTION)
        text_file = clip.with_name(f"{stamp}.txt")
        if not text_file.is_file():
            skipped.add(clip, f"no text file {text_file.name} beside it")
            continue
        line = english_line(text_file.read_text(encoding="utf-8", errors="replace"))
        if line is None:
            skipped.add(clip, f"{text_file.name} has no English first line")
            continue
        text = normalize_text(line)
        if not text:
            skipped.add(clip, f"{text_file.name}: no words in {line!r}")
            continue
        category = clip.parent.relative_to(stamps).as_posix().replace("/", "-")
        clips.append((f"tuxpaint-{category}-{stamp}", clip, text, "tuxpaint", {"orig_text": line}))
    return clips


def stage_manifests(root: Path, out: Path) -> dict[str, Path]:
    """``cuts_test_tuxpaint.jsonl.gz`` and ``skipped.txt`` (once)."""
    done = common.existing_manifests(out, (SPLIT,))
    if done:
        return done
    stamps = common.locate(root, [STAMPS], f"{STAMPS}/ (dpkg-deb -x of {PACKAGE})") / STAMPS
    skipped = common.SkipLog()
    readable = []
    for clip_id, path, text, speaker, custom in description_clips(stamps, skipped):
        if common.read_recording(path, clip_id, skipped) is not None:
            readable.append((clip_id, path, text, speaker, custom))
    if not readable:
        report = skipped.write(out)
        raise common.CorpusError(f"{stamps}: no description clip with an English text (see {report})")
    return common.write_splits(out, {SPLIT: common.clip_cuts(readable)}, skipped)


def prepare(out: Path, corpus_dir: Path | None = None, stage: int = 1, stop_stage: int = 2) -> dict | None:
    """Run stages ``stage``..``stop_stage``; ``corpus_dir`` (the unpacked package) replaces stage 1."""
    out.mkdir(parents=True, exist_ok=True)
    root = corpus_dir
    if root is None:
        root = stage_fetch(out) if stage <= 1 <= stop_stage else out / "debian" / "root"
    return stage_manifests(root, out) if stage <= 2 <= stop_stage else None


def main(argv: list[str] | None = None) -> None:
    common.staged_main(
        prepare, argv, "tuxpaint", __doc__.split("\n\n")[0],
        corpus_help=f"{PACKAGE} already unpacked (dpkg-deb -x), or / where it is installed", stop_stage=2,
    )  # fmt: skip


if __name__ == "__main__":
    main()
