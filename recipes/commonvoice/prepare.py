"""Common Voice (English): crowd-sourced read sentences, MP3 clips at 32-48 kHz.

    python -m recipes.commonvoice.prepare --corpus-dir /path/to/cv-corpus-<version> --out data/commonvoice

reads the release's official English split (``en/train.tsv``, ``dev.tsv``, ``test.tsv``) with
lhotse's recipe and writes ``cuts_train``, ``cuts_dev`` and ``cuts_test`` under ``--out``.
"""

import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from lhotse.recipes import commonvoice as lhotse_commonvoice

from recipes import common

LANGUAGE = "en"
SPLITS = ("train", "dev", "test")
# The tsv columns lhotse's recipe reads; releases before 13.0 lack "variant" and fail in lhotse.
COLUMNS = ("client_id", "path", "sentence", "age", "gender", "accents", "variant")
LAYOUT = (
    "cv-corpus-<version>/en/{train,dev,test}.tsv and cv-corpus-<version>/en/clips/*.mp3 "
    "(the English archive of Common Voice 13.0 or later, unpacked)"
)


def check_columns(tsv: Path) -> None:
    """Fail early, naming the file, when the tsv lacks a column lhotse's recipe reads."""
    with tsv.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
    missing = [column for column in COLUMNS if column not in header]
    if missing:
        raise common.CorpusError(f"{tsv} lacks the columns {', '.join(missing)}: expected {LAYOUT}")


@contextmanager
def threads_for_processes() -> Iterator[None]:
    """Have lhotse's Common Voice recipe read the clips in threads instead of spawned processes.

    Spawned workers import lhotse and torch afresh (seconds each) and do not see the stand-in
    of :func:`common.tolerate_unreadable_audio`, so one damaged MP3 would end the preparation.
    Reading a clip's header runs in libsndfile, outside the GIL, so threads lose little.
    """
    real = lhotse_commonvoice.ProcessPoolExecutor

    def threads(max_workers: int | None = None, mp_context=None) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers)  # mp_context, lhotse's "spawn", means nothing for threads

    lhotse_commonvoice.ProcessPoolExecutor = threads
    try:
        yield
    finally:
        lhotse_commonvoice.ProcessPoolExecutor = real


def prepare(
    corpus_dir: str | os.PathLike, out_dir: str | os.PathLike, num_jobs: int | None = None
) -> dict[str, Path]:
    """Write the Common Voice English cut manifests to ``out_dir``; return them by split name.

    Does nothing when every manifest exists. Clips that cannot be read are listed in
    ``out_dir/skipped.txt`` and left out.

    Raises:
        CorpusError: ``corpus_dir`` is not an unpacked Common Voice release with English.
    """
    required = [f"{LANGUAGE}/{split}.tsv" for split in SPLITS] + [f"{LANGUAGE}/clips"]
    root = common.locate(corpus_dir, required, LAYOUT, inside=("cv-corpus-*",))
    for split in SPLITS:
        check_columns(root / LANGUAGE / f"{split}.tsv")
    out_dir = Path(out_dir)
    done = common.existing_manifests(out_dir, SPLITS)
    if done:
        return done
    skipped = common.SkipLog()
    out_dir.mkdir(parents=True, exist_ok=True)
    # lhotse insists on writing its own manifests; ours are the cuts, so its copies are thrown away.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".lhotse-") as scratch:
        with threads_for_processes(), common.tolerate_unreadable_audio(lhotse_commonvoice, skipped):
            manifests = lhotse_commonvoice.prepare_commonvoice(
                root,
                scratch,
                languages=[LANGUAGE],
                splits=SPLITS,
                num_jobs=num_jobs or common.available_cores(),
            )[LANGUAGE]
    cuts = {
        split: common.make_cuts(manifests[split]["recordings"], manifests[split]["supervisions"])
        for split in SPLITS
    }
    return common.write_splits(out_dir, cuts, skipped)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; a missing or misplaced corpus exits with status 1 and one line."""
    parser = common.argument_parser("commonvoice", "Write lhotse cut manifests of Common Voice English.")
    parser.add_argument(
        "--num-jobs",
        type=int,
        default=common.available_cores(),
        help="threads reading the clips' headers (default: the cores this process may use)",
    )
    args = parser.parse_args(argv)
    common.run(prepare, args.corpus_dir, args.out, num_jobs=args.num_jobs)


if __name__ == "__main__":
    main()
