"""Progress bars for long jobs, on stderr, only when it is a terminal: logs and pipes stay clean."""

import sys


def progress(iterable=None, quiet: bool = False, **options):
    """A tqdm bar over ``iterable`` (or updated by hand: ``total=``), shown only on a terminal
    and not with ``quiet``; ``options`` go to tqdm (``desc``, ``total``, ``unit``)."""
    from tqdm import tqdm

    return tqdm(iterable, disable=True if quiet else None, file=sys.stderr, dynamic_ncols=True, **options)
