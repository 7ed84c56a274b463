"""Writing files so that a crash never leaves a half-written one where a good one was."""

import os
from collections.abc import Callable
from pathlib import Path


def write_atomically(path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a hidden file next to ``path``, then rename it to ``path``.

    A rename within a folder is atomic, so ``path`` is either its old self or complete, even
    after a crash; a failed write removes its partial file. The temporary name keeps the
    suffixes (``.jsonl.gz``): lhotse picks the format from them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")
    try:
        write(partial)
        with open(partial, "rb+") as written:  # on disk before the rename makes it the file
            os.fsync(written.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path
