"""Cut manifests on disk, read lazily with errors that name the file (:func:`read_cuts`).
Nothing here imports Lightning: the commands that only read manifests start without it.
"""

import math
from pathlib import Path

from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.lazy import LazyManifestIterator
from lhotse.serialization import decode_json_line, deserialize_item, open_best


class CheckedManifest(LazyManifestIterator):
    """lhotse's lazy manifest reader, each line checked as it is read: a line that is not a
    cut (bad JSON, another kind of manifest, fields missing or of the wrong type) raises a
    ValueError naming the file and the line, instead of whatever the parsing hit."""

    def __iter__(self):
        with open_best(self.path, "r") as lines:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    yield _cut(line, f"{self.path}, line {number}")


def _cut(line: str, where: str) -> Cut:
    try:
        cut = deserialize_item(decode_json_line(line))
    except Exception as err:  # lhotse's parsing of a malformed line fails in many ways
        raise ValueError(f"{where}: not a cut ({type(err).__name__}: {err})") from None
    if not isinstance(cut, Cut):
        raise ValueError(f"{where}: expected a cut, found a {type(cut).__name__}")
    if not isinstance(cut.id, str):
        raise ValueError(f"{where}: the cut's id is not a string: {cut.id!r}")
    if not isinstance(cut.duration, int | float) or not 0 <= cut.duration < math.inf:
        raise ValueError(f"{where}: cut {cut.id} has no valid duration: {cut.duration!r}")
    if not all(isinstance(s.text, str | None) for s in getattr(cut, "supervisions", None) or []):
        raise ValueError(f"{where}: cut {cut.id} has a supervision whose text is not a string")
    return cut


def read_cuts(path) -> CutSet:
    """Open a lhotse cut manifest (``.jsonl`` or ``.jsonl.gz``) lazily, with clear errors: its
    first cut is read at once, and every line is checked as it is read (:class:`CheckedManifest`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest (run the recipe's prepare stage first)")
    manifest = CutSet(CheckedManifest(path))
    try:
        next(iter(manifest), None)
    except (OSError, EOFError, UnicodeDecodeError) as err:  # not gzip, truncated, not text
        raise ValueError(f"{path}: not a readable manifest ({type(err).__name__}: {err})") from None
    return manifest
