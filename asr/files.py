"""Writing files so that a crash never leaves a half-written one where a good one was; how
many processes a job may run."""

import os
import shutil
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


def write_folder_atomically(path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a hidden folder next to ``path``, then put that folder in its place.

    A folder cannot be renamed over one that holds files, so it takes two renames: the old
    folder steps aside to ``.old-<name>``, the new one takes its name, then the old one is
    deleted. A crash while ``write`` runs leaves the old folder untouched; between the two
    renames, the old folder waits whole beside it, and the next call puts it back first.
    """
    given, path = Path(path), Path(path).resolve()  # resolved: "." has no name to put beside it
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")
    old = path.with_name(f".old-{path.name}")
    if old.exists() and not path.exists():  # a crash between the renames: the old one was whole
        os.replace(old, path)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        write(partial)
        for file in partial.rglob("*"):
            if file.is_file():
                with open(file, "rb+") as written:  # on disk before the renames make it the folder
                    os.fsync(written.fileno())
        if path.exists():
            os.replace(path, old)
        os.replace(partial, path)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return given


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity: a container's or taskset's share,
    not every core of the machine as ``os.cpu_count()``): the default number of jobs."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
