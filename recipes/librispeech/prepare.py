"""LibriSpeech: read English audiobooks, 16 kHz FLAC, 1000 hours in seven parts.

    python -m recipes.librispeech.prepare --corpus-dir /path/to/download --out data/librispeech

reads the unpacked tarballs (``LibriSpeech/<part>/...``) with lhotse's recipe and writes
``cuts_train`` (train-clean-100 plus train-clean-360 and train-other-500 when present),
``cuts_dev`` (dev-clean), ``cuts_test`` (test-clean) and, when present, ``cuts_dev_other`` and
``cuts_test_other`` under ``--out``.
"""

import os
from pathlib import Path

from lhotse.recipes import librispeech as lhotse_librispeech

from recipes import common

# Our split -> the LibriSpeech parts it is made of, in the order they are usually downloaded.
PARTS = {
    "train": ("train-clean-100", "train-clean-360", "train-other-500"),
    "dev": ("dev-clean",),
    "dev_other": ("dev-other",),
    "test": ("test-clean",),
    "test_other": ("test-other",),
}
REQUIRED = ("train-clean-100", "dev-clean", "test-clean")
LAYOUT = (
    "LibriSpeech/<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt and <speaker>-<chapter>-<n>.flac "
    "for the parts train-clean-100, dev-clean and test-clean (train-clean-360, train-other-500, dev-other "
    "and test-other are used when present)"
)


def available_parts(root: Path) -> dict[str, list[str]]:
    """Our splits -> the parts of them found under ``root``; splits with none are left out."""
    found = {split: [part for part in parts if (root / part).is_dir()] for split, parts in PARTS.items()}
    return {split: parts for split, parts in found.items() if parts}


def prepare(
    corpus_dir: str | os.PathLike, out_dir: str | os.PathLike, num_jobs: int | None = None
) -> dict[str, Path]:
    """Write the LibriSpeech cut manifests to ``out_dir``; return them by split name.

    Does nothing when every manifest exists. Clips that cannot be read are listed in
    ``out_dir/skipped.txt`` and left out.

    Raises:
        CorpusError: ``corpus_dir`` does not hold the LibriSpeech layout.
    """
    root = common.locate(corpus_dir, REQUIRED, LAYOUT, inside=("LibriSpeech",))
    splits = available_parts(root)
    out_dir = Path(out_dir)
    done = common.existing_manifests(out_dir, splits)
    if done:
        return done
    skipped = common.SkipLog()
    with common.tolerate_unreadable_audio(lhotse_librispeech, skipped):
        manifests = lhotse_librispeech.prepare_librispeech(
            root,
            dataset_parts=[part for parts in splits.values() for part in parts],
            num_jobs=num_jobs or common.available_cores(),
        )
    cuts = {
        split: common.make_cuts(
            (recording for part in parts for recording in manifests[part]["recordings"]),
            (segment for part in parts for segment in manifests[part]["supervisions"]),
        )
        for split, parts in splits.items()
    }
    return common.write_splits(out_dir, cuts, skipped)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; a missing or misplaced corpus exits with status 1 and one line."""
    parser = common.argument_parser("librispeech", "Write lhotse cut manifests of LibriSpeech.")
    parser.add_argument(
        "--num-jobs",
        type=int,
        default=common.available_cores(),
        help="threads reading the audio headers (default: the cores this process may use)",
    )
    args = parser.parse_args(argv)
    common.run(prepare, args.corpus_dir, args.out, num_jobs=args.num_jobs)


if __name__ == "__main__":
    main()
