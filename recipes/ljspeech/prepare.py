"""LJSpeech: 13,100 clips of one speaker reading non-fiction, 24 hours, 22.05 kHz WAV.

    python -m recipes.ljspeech.prepare --corpus-dir /path/to/download --out data/ljspeech [--seed 0]

reads ``LJSpeech-1.1/metadata.csv`` and ``wavs/`` with lhotse's recipe. The corpus has no
official split, so a seeded 2 % of the clips become ``cuts_dev`` and another 2 % ``cuts_test``;
the rest is ``cuts_train``.
"""

import os
from pathlib import Path

from lhotse import SupervisionSegment
from lhotse.recipes import ljspeech as lhotse_ljspeech

from recipes import common

SPLITS = ("train", "dev", "test")
LAYOUT = (
    "LJSpeech-1.1/metadata.csv (id|text|normalized text per line) and LJSpeech-1.1/wavs/<id>.wav "
    "(the LJSpeech-1.1 archive, unpacked)"
)


def spoken_text(segment: SupervisionSegment) -> str:
    """LJSpeech's third column, which spells out what the reader said ("Mr." as "Mister",
    "1835" as "eighteen thirty-five"); the raw text when that column is empty."""
    return (segment.custom or {}).get("normalized_text") or segment.text or ""


def prepare(
    corpus_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    dev_fraction: float = 0.02,
    test_fraction: float = 0.02,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the LJSpeech cut manifests to ``out_dir``; return them by split name.

    The split is by clip and depends only on the clip ids and ``seed``. Does nothing when every
    manifest exists. Clips that cannot be read are listed in ``out_dir/skipped.txt`` and left out.

    Raises:
        CorpusError: ``corpus_dir`` does not hold the LJSpeech layout.
    """
    root = common.locate(corpus_dir, ["metadata.csv", "wavs"], LAYOUT, inside=("LJSpeech-1.1",))
    out_dir = Path(out_dir)
    done = common.existing_manifests(out_dir, SPLITS)
    if done:
        return done
    skipped = common.SkipLog()
    with common.tolerate_unreadable_audio(lhotse_ljspeech, skipped):
        manifests = lhotse_ljspeech.prepare_ljspeech(root)
    cuts = common.make_cuts(manifests["recordings"], manifests["supervisions"], text_of=spoken_text)
    fractions = {"dev": dev_fraction, "test": test_fraction}
    splits = common.split_by_key(cuts, lambda cut: cut.recording_id, fractions, seed, unit="clips")
    return common.write_splits(out_dir, splits, skipped)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; a missing or misplaced corpus exits with status 1 and one line."""
    parser = common.argument_parser("ljspeech", "Write lhotse cut manifests of LJSpeech with a seeded split.")
    parser.add_argument("--dev-fraction", type=float, default=0.02, help="share of clips for development")
    parser.add_argument("--test-fraction", type=float, default=0.02, help="share of clips for testing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split")
    args = parser.parse_args(argv)
    fractions = {"dev_fraction": args.dev_fraction, "test_fraction": args.test_fraction}
    common.run(prepare, args.corpus_dir, args.out, **fractions, seed=args.seed)


if __name__ == "__main__":
    main()
