"""Any folder of audio clips with transcripts: your own recordings as a corpus.

    python -m recipes.folder.prepare --corpus-dir DIR --out data/folder \\
        [--list transcripts.tsv] [--dev-fraction 0.05 --test-fraction 0.05 --seed 0]

Clips (wav, flac, ogg, opus, mp3, m4a; any rate, any channel count) are found in ``DIR`` and its
subfolders, each transcribed by a ``.txt`` file of the same name beside it (``a/b.wav`` and
``a/b.txt``). With ``--list``, clips and transcripts come from a table instead: ``path<TAB>text``
lines (``.tsv``) or ``path,text`` rows (``.csv``), an optional header row starting with
``path``, paths relative to the table's folder. A seeded share of the clips becomes ``cuts_dev``
and ``cuts_test``. Clips that cannot be read or lack a transcript are listed in
``--out/skipped.txt`` and left out.
"""

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from lhotse import SupervisionSegment

from recipes import common

SPLITS = ("train", "dev", "test")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a")
HEADER_NAMES = ("path", "file", "audio")  # first field of a header row in a --list table
LAYOUT = (
    "a folder of audio files (.wav, .flac, .ogg, .opus, .mp3, .m4a), each with a .txt transcript beside it"
)


def clips_beside(root: Path, skipped: common.SkipLog) -> Iterator[tuple[Path, str]]:
    """(clip, transcript) for the audio files under ``root`` that have a non-empty .txt beside them."""
    clips = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    for clip in clips:
        transcript = clip.with_suffix(".txt")
        if not transcript.is_file():
            skipped.add(clip, f"no transcript ({transcript.name} not found beside it)")
            continue
        text = transcript.read_text(encoding="utf-8", errors="replace").strip()
        if not text:
            skipped.add(clip, f"empty transcript ({transcript.name})")
            continue
        yield clip, text


def clips_listed(table: Path, skipped: common.SkipLog) -> Iterator[tuple[Path, str]]:
    """(clip, transcript) rows of a .tsv or .csv table; paths are relative to the table's folder."""
    is_csv = table.suffix.lower() == ".csv"
    # Tab-separated transcripts are read without quoting, since they hold quote marks.
    quoting = csv.QUOTE_MINIMAL if is_csv else csv.QUOTE_NONE
    with table.open(newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f, delimiter="," if is_csv else "\t", quoting=quoting), 1):
            if not "".join(row).strip() or (number == 1 and row[0].strip().lower() in HEADER_NAMES):
                continue
            clip = table.parent / row[0].strip()
            # An unquoted comma inside a csv transcript splits it: the rest of the row is the text.
            text = ("," if is_csv else "\t").join(row[1:]).strip()
            if not text:
                skipped.add(clip, f"empty transcript ({table.name} line {number})")
                continue
            yield clip, text


def make_corpus_cuts(clips: Iterator[tuple[Path, str]], base: Path, skipped: common.SkipLog):
    """Cuts of the readable clips, each with one supervision over the whole clip (all its channels).

    A clip's id is its path relative to ``base``, so clips of the same name in different
    folders (or with different suffixes) stay apart.
    """
    recordings, segments = [], []
    for clip, text in clips:
        clip_id = Path(os.path.relpath(clip, base)).as_posix()
        recording = common.read_recording(clip, clip_id, skipped)
        if recording is None:
            continue
        channels = recording.channel_ids
        recordings.append(recording)
        segments.append(
            SupervisionSegment(
                id=clip_id,
                recording_id=clip_id,
                start=0.0,
                duration=recording.duration,
                channel=channels if len(channels) > 1 else channels[0],
                text=text,
            )
        )
    return common.make_cuts(recordings, segments)


def prepare(
    corpus_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    list_file: str | os.PathLike | None = None,
    dev_fraction: float = 0.05,
    test_fraction: float = 0.05,
    seed: int = 0,
) -> dict[str, Path]:
    """Write cut manifests of the clips in ``corpus_dir`` (or in ``list_file``) to ``out_dir``.

    ``list_file``, when relative, is taken from ``corpus_dir``. The split is by clip and depends
    only on the clip ids and ``seed``. Does nothing when every manifest exists.

    Raises:
        CorpusError: ``corpus_dir`` or ``list_file`` does not exist.
    """
    root = common.locate(corpus_dir, [], LAYOUT)
    table = root / list_file if list_file is not None else None
    if table is not None and not table.is_file():
        raise common.CorpusError(
            f"{table} does not exist: expected a table of path<TAB>text lines (or path,text)"
        )
    out_dir = Path(out_dir)
    done = common.existing_manifests(out_dir, SPLITS)
    if done:
        return done
    skipped = common.SkipLog()
    if table is None:
        cuts = make_corpus_cuts(clips_beside(root, skipped), root, skipped)
    else:
        cuts = make_corpus_cuts(clips_listed(table, skipped), table.parent, skipped)
    if not cuts:
        report = skipped.write(out_dir)
        raise common.CorpusError(f"{table or root} holds no readable clip with a transcript (see {report})")
    fractions = {"dev": dev_fraction, "test": test_fraction}
    splits = common.split_by_key(cuts, lambda cut: cut.recording_id, fractions, seed, unit="clips")
    return common.write_splits(out_dir, splits, skipped)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; a missing folder or list exits with status 1 and one line."""
    parser = common.argument_parser("folder", "Write lhotse cut manifests of a folder of transcribed clips.")
    parser.add_argument("--list", type=Path, help="a .tsv (path<TAB>text) or .csv (path,text) table of clips")
    parser.add_argument("--dev-fraction", type=float, default=0.05, help="share of clips for development")
    parser.add_argument("--test-fraction", type=float, default=0.05, help="share of clips for testing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    args = parser.parse_args(argv)
    fractions = {"dev_fraction": args.dev_fraction, "test_fraction": args.test_fraction}
    common.run(prepare, args.corpus_dir, args.out, list_file=args.list, **fractions, seed=args.seed)


if __name__ == "__main__":
    main()
