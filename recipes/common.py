"""What the corpus recipes share: from lhotse manifests to ``cuts_<split>.jsonl.gz``.

A recipe finds its corpus (:func:`locate`), lets lhotse parse it (inside
:func:`tolerate_unreadable_audio`, so one damaged clip does not end the run), builds cuts with
normalised texts (:func:`make_cuts`) and hands them to :func:`write_splits`, which drops what
cannot be trained or scored on, writes each manifest atomically, prints a summary per split
and lists the skipped files in ``skipped.txt``.
"""

import argparse
import math
import os
import random
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace

import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.audio import AudioSource
from lhotse.audio.utils import AudioLoadingError
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from asr.files import available_cores, write_atomically  # noqa: F401 (the recipes' job count and writer)
from asr.text import normalize_text

# Seconds of audio a training cut may hold. Shorter clips are mostly silence or a cut-off word;
# longer ones take memory out of proportion in a duration-bounded batch and add little.
TRAIN_DURATION = (0.2, 30.0)
# Development and test cuts are all kept (only empty ones go), so scores stay comparable with
# published figures on the same sets.
EVAL_DURATION = (0.0, math.inf)
SKIPPED_FILE = "skipped.txt"


class CorpusError(RuntimeError):
    """A corpus folder that is missing or laid out otherwise; the message names it and the layout."""


class SkipLog:
    """Input files left out of the corpus and why, written to ``skipped.txt``.

    ``recording_ids`` are the ids of recordings that stand in for unreadable files (see
    :func:`tolerate_unreadable_audio`); their cuts are dropped by :func:`write_splits`.
    """

    def __init__(self) -> None:
        self.entries: list[tuple[str, str]] = []
        self.recording_ids: set[str] = set()

    def add(self, path: str | os.PathLike, reason: str, recording_id: str | None = None) -> None:
        """Record that ``path`` was left out because of ``reason`` (one line)."""
        self.entries.append((str(path), reason))
        if recording_id is not None:
            self.recording_ids.add(recording_id)

    def write(self, out_dir: Path) -> Path:
        """Write ``path<TAB>reason`` lines, sorted, to ``out_dir/skipped.txt`` (empty if none)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / SKIPPED_FILE
        lines = "".join(f"{file}\t{reason}\n" for file, reason in sorted(self.entries))
        write_atomically(path, lambda tmp: tmp.write_text(lines, encoding="utf-8"))
        return path


def clip_cuts(clips: Iterable[tuple[str, Path, str, str, dict | None]]) -> CutSet:
    """One cut per ``(id, audio path, transcript, speaker, custom)`` clip, its text covering the clip.

    For corpora this project renders itself: every file is one utterance, already normalised.
    """
    recordings, supervisions = [], []
    for clip_id, path, text, speaker, custom in clips:
        recording = Recording.from_file(path, recording_id=clip_id)
        recordings.append(recording)
        supervisions.append(
            SupervisionSegment(
                id=clip_id, recording_id=clip_id, start=0.0, duration=recording.duration, channel=0,
                text=text, language="English", speaker=speaker, custom=custom,
            )
        )  # fmt: skip
    return CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recordings),
        supervisions=SupervisionSet.from_segments(supervisions),
    )


def manifest_path(out_dir: Path, split: str) -> Path:
    """Where the cuts of ``split`` go: ``out_dir/cuts_<split>.jsonl.gz``."""
    return out_dir / f"cuts_{split}.jsonl.gz"


def existing_manifests(out_dir: Path, splits: Iterable[str]) -> dict[str, Path] | None:
    """The manifests of ``splits`` if all of them exist already (then there is nothing to do)."""
    paths = {split: manifest_path(out_dir, split) for split in splits}
    if not all(path.is_file() for path in paths.values()):
        return None
    print(f"{out_dir}: manifests already exist, nothing to do")
    return paths


def locate(
    corpus_dir: str | os.PathLike, required: Iterable[str], layout: str, inside: Iterable[str] = ()
) -> Path:
    """The corpus root: ``corpus_dir`` or a folder matching a pattern in ``inside``, holding ``required``.

    Users point at the folder they downloaded into or at the unpacked corpus itself; both work.
    The root is absolute, so the manifests work from any working directory.

    Raises:
        CorpusError: no candidate, or more than one (two releases side by side), holds every
            path in ``required``; says what was expected.
    """
    corpus_dir = Path(corpus_dir).resolve()
    candidates = [corpus_dir, *(p for pattern in inside for p in sorted(corpus_dir.glob(pattern)))]
    roots = [
        root for root in candidates if root.is_dir() and all((root / name).exists() for name in required)
    ]
    if len(roots) == 1:
        return roots[0]
    if roots:
        raise CorpusError(f"{corpus_dir} holds {len(roots)} corpora ({', '.join(map(str, roots))}): pass one")
    problem = "is not laid out as expected" if corpus_dir.is_dir() else "is not a folder"
    raise CorpusError(f"{corpus_dir} {problem}: expected {layout}")


def unreadable_reason(path: Path, error: Exception) -> str:
    """One line saying why ``path`` could not be read; lhotse's own message spans many lines."""
    if not path.is_file():
        return "no such file"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        sf.info(path)
    except sf.LibsndfileError as sf_error:
        return f"not a readable audio file ({sf_error.error_string})"
    except RuntimeError as sf_error:  # older soundfile versions raise a bare RuntimeError
        return f"not a readable audio file ({sf_error})"
    return str(error).splitlines()[0]


def read_recording(path: Path, recording_id: str, skipped: SkipLog) -> Recording | None:
    """``Recording.from_file``, or None with the reason logged in ``skipped`` when it cannot be read."""
    try:
        return Recording.from_file(path, recording_id=recording_id)
    except AudioLoadingError as error:
        skipped.add(path, unreadable_reason(path, error))
        return None


@contextmanager
def tolerate_unreadable_audio(module: ModuleType, skipped: SkipLog) -> Iterator[None]:
    """Let the lhotse recipe ``module`` go on past audio files it cannot read.

    lhotse's recipes call ``Recording.from_file`` on every clip, and one damaged file ends the
    whole preparation with an exception. Within this block the module's ``Recording.from_file``
    logs such a file in ``skipped`` and returns a one-second stand-in under the same id, so the
    recipe's own parsing runs unchanged; :func:`write_splits` then drops the stand-ins' cuts.
    Only for recipes that read the clips in this process (threads, not worker processes).
    """
    real = module.Recording
    # A stand-in has the rate of the last clip read, so lhotse does not warn of a mixed-rate corpus.
    rate = {"last": 16000}

    def from_file(path, recording_id=None, **kwargs) -> Recording:
        try:
            recording = real.from_file(path, recording_id, **kwargs)
        except AudioLoadingError as error:
            path = Path(path)
            rid = recording_id(path) if callable(recording_id) else recording_id or path.stem
            skipped.add(path, unreadable_reason(path, error), rid)
            source = AudioSource(type="file", channels=[0], source=str(path))
            return Recording(
                id=rid, sources=[source], sampling_rate=rate["last"], num_samples=rate["last"], duration=1.0
            )
        rate["last"] = recording.sampling_rate
        return recording

    module.Recording = SimpleNamespace(from_file=from_file)
    try:
        yield
    finally:
        module.Recording = real


def normalized(segment: SupervisionSegment, text: str) -> SupervisionSegment:
    """``segment`` with ``normalize_text(text)`` as its text, the corpus's text in custom["orig_text"]."""
    custom = {**(segment.custom or {}), "orig_text": segment.text or ""}
    return fastcopy(segment, text=normalize_text(text), custom=custom)


def make_cuts(
    recordings: Iterable[Recording],
    supervisions: Iterable[SupervisionSegment],
    text_of: Callable[[SupervisionSegment], str] = lambda segment: segment.text or "",
) -> CutSet:
    """One cut per recording, its supervisions' texts normalised.

    Args:
        text_of: the text to normalise, when a corpus offers a better one than ``segment.text``
            (LJSpeech's expanded transcription, for example).
    """
    return CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recordings),
        supervisions=SupervisionSet.from_segments(normalized(s, text_of(s)) for s in supervisions),
    )


def drop_reason(cut: Cut, duration_range: tuple[float, float], skipped: SkipLog) -> str | None:
    """Why ``cut`` is left out of its split, or None to keep it."""
    if cut.recording_id in skipped.recording_ids:
        return "unreadable audio"
    if not " ".join(s.text or "" for s in cut.supervisions).strip():
        return "empty text"
    low, high = duration_range
    if cut.duration <= 0 or cut.duration < low:
        return f"shorter than {low:g} s" if low > 0 else "no audio"
    if cut.duration > high:
        return f"longer than {high:g} s"
    return None


def filter_cuts(
    cuts: CutSet, duration_range: tuple[float, float], skipped: SkipLog
) -> tuple[CutSet, Counter]:
    """The cuts to keep, sorted by id (not in the order the files were found), and drop counts by reason."""
    kept, dropped = [], Counter()
    for cut in cuts:
        reason = drop_reason(cut, duration_range, skipped)
        if reason is None:
            kept.append(cut)
        else:
            dropped[reason] += 1
    return CutSet.from_cuts(sorted(kept, key=lambda cut: cut.id)), dropped


def write_splits(out_dir: str | os.PathLike, splits: dict[str, CutSet], skipped: SkipLog) -> dict[str, Path]:
    """Filter each split, write ``cuts_<split>.jsonl.gz`` and ``skipped.txt``, print a summary.

    Training cuts must last :data:`TRAIN_DURATION`; others only need text and audio. No manifest
    is written if a split ends up empty, so a broken corpus never leaves a half-made set.

    Raises:
        CorpusError: a split has no usable cut.
    """
    out_dir = Path(out_dir)
    kept = {}
    for split, cuts in splits.items():
        duration_range = TRAIN_DURATION if split == "train" else EVAL_DURATION
        kept[split] = filter_cuts(cuts, duration_range, skipped)
        if not kept[split][0]:
            report = skipped.write(out_dir)
            dropped = _counts(kept[split][1])
            raise CorpusError(f"no usable utterances for the {split} split (dropped {dropped}; see {report})")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, (cuts, dropped) in kept.items():
        paths[split] = manifest_path(out_dir, split)
        write_atomically(paths[split], cuts.to_file)
        hours = sum(cut.duration for cut in cuts) / 3600
        print(f"{split}: {len(cuts)} utterances, {hours:.2f} h, dropped {_counts(dropped)} -> {paths[split]}")
    report = skipped.write(out_dir)
    if skipped.entries:
        print(f"{len(skipped.entries)} input files skipped, listed with the reason in {report}")
    return paths


def _counts(counter: Counter) -> str:
    """'3 empty text, 1 longer than 30 s' or 'none'."""
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counter.items())) or "none"


def split_by_key(
    cuts: CutSet, key: Callable[[Cut], str], fractions: dict[str, float], seed: int, unit: str = "utterances"
) -> dict[str, CutSet]:
    """Deal the distinct keys of ``cuts`` (utterance, speaker or file ids) into splits, reproducibly.

    Each split named in ``fractions`` gets ``round(fraction * keys)`` keys, at least one; "train"
    gets the rest. Keys are sorted before the seeded shuffle, so the split depends only on the
    keys and the seed, not on the order in which the files were found.

    Raises:
        CorpusError: too few keys to leave any for training (``unit`` names them in the message).
    """
    keys = sorted({key(cut) for cut in cuts})
    random.Random(seed).shuffle(keys)
    assignment: dict[str, str] = {}
    for split, fraction in fractions.items():
        count = max(1, round(fraction * len(keys))) if fraction > 0 else 0
        assignment.update(dict.fromkeys(keys[len(assignment) : len(assignment) + count], split))
    if len(assignment) >= len(keys):
        raise CorpusError(f"only {len(keys)} {unit}: too few to split into train, {', '.join(fractions)}")
    parts: dict[str, list[Cut]] = {"train": [], **{split: [] for split in fractions}}
    for cut in cuts:
        parts[assignment.get(key(cut), "train")].append(cut)
    return {split: CutSet.from_cuts(part) for split, part in parts.items()}


def argument_parser(corpus: str, description: str) -> argparse.ArgumentParser:
    """The options every recipe takes: ``--corpus-dir`` and ``--out``."""
    parser = argparse.ArgumentParser(prog=f"python -m recipes.{corpus}.prepare", description=description)
    parser.add_argument(
        "--corpus-dir", type=Path, help="the corpus as downloaded and unpacked (not needed once prepared)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder for the manifests")
    return parser


def staged_main(
    prepare: Callable[..., object], argv: list[str] | None, corpus: str, description: str, corpus_help: str,
    stop_stage: int, parallel: bool = False,
) -> None:  # fmt: skip
    """The command line of a recipe of Debian packages: ``--out``, ``--corpus-dir``, ``--stage``,
    ``--stop-stage`` passed to ``prepare(out, corpus_dir, stage, stop_stage)`` (and, for a
    ``parallel`` recipe, ``--num-jobs`` as ``num_jobs=``); a CorpusError or DebianError becomes
    one line on stderr and exit status 1."""
    from recipes import debian

    parser = argparse.ArgumentParser(prog=f"python -m recipes.{corpus}.prepare", description=description)
    parser.add_argument("--out", type=Path, required=True, help=f"output folder (data/{corpus})")
    parser.add_argument("--corpus-dir", type=Path, help=corpus_help)
    parser.add_argument("--stage", type=int, default=1)
    parser.add_argument("--stop-stage", type=int, default=stop_stage)
    if parallel:
        parser.add_argument(
            "--num-jobs", type=int, help="processes (default: the cores this process may run on)"
        )
    args = parser.parse_args(argv)
    jobs = {"num_jobs": args.num_jobs} if parallel else {}
    try:
        prepare(args.out, args.corpus_dir, args.stage, args.stop_stage, **jobs)
    except (CorpusError, debian.DebianError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def run(prepare: Callable[..., object], corpus_dir: Path | None, out_dir: Path, **options) -> None:
    """Call ``prepare(corpus_dir, out_dir, **options)`` for a recipe's command line.

    Without a corpus folder, manifests made earlier are enough: ``make train`` runs the prepare
    stage again without ``CORPUS``. A CorpusError becomes one line on stderr and exit status 1.
    """
    try:
        if corpus_dir is not None:
            prepare(corpus_dir, out_dir, **options)
        elif not existing_manifests(out_dir, ("train", "dev", "test")):
            raise CorpusError(f"{out_dir} holds no manifests yet: say where the corpus is with --corpus-dir")
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
