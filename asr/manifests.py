"""Cut manifests on disk, read lazily with errors that name the file: a JSONL manifest
(:func:`read_cuts`), or a folder of Shar shards (:func:`open_shar`) that ``asr data shard``
writes (:func:`write_shar`). Nothing here imports Lightning: the commands that only read or
convert manifests start without it.

A Shar folder (lhotse's format) holds shard ``k`` as two files: ``cuts.<k>.jsonl.gz``, its
cuts, and ``recording.<k>.tar``, their audio, one tar member per cut in the same order. A
training run reads a shard from start to end, cuts and audio side by side: a few large
sequential reads instead of one open and seek per clip, from any disk or a network share, and
only the cuts being batched are in memory, each holding its encoded audio.
"""

import gzip
import json
import math
import random
import re
import shutil
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import soundfile as sf
from lhotse import CutSet, Recording, compute_num_samples, fastcopy
from lhotse.cut import Cut
from lhotse.lazy import LazyManifestIterator, count_newlines_fast
from lhotse.serialization import decode_json_line, deserialize_item, open_best
from lhotse.shar import LazySharIterator
from lhotse.shar.utils import to_shar_placeholder
from lhotse.shar.writers.cut import JsonlShardWriter
from lhotse.shar.writers.tar import TarWriter

from asr.files import write_folder_atomically

SHARD_SIZE = 1000  # cuts per shard: ~100 MB of 16 kHz FLAC for 5 s clips, read in one pass
CUTS_SHARD = re.compile(r"cuts\.(\d+)\.jsonl\.gz")
AUDIO_SHARD = re.compile(r"recording\.(\d+)\.tar")
# Integer PCM that FLAC holds as it is (unsigned 8-bit becomes signed 8-bit: the same values).
FLAC_DEPTHS = {"PCM_S8": "PCM_S8", "PCM_U8": "PCM_S8", "PCM_16": "PCM_16", "PCM_24": "PCM_24"}
# `asr data shard` shuffles a manifest through temporary piles of this many cuts, one pile in
# memory at a time (~10 MB: a cut's manifest is ~1 kB in memory), and at most 256 files open.
SHUFFLE_PILE = 10_000
MAX_PILES = 256
# What reading a damaged shard raises: the tar reader (a member cut short, an odd number of
# members, an audio member named for another cut) or the gzip and JSON of its cuts file.
SHARD_ERRORS = (OSError, EOFError, tarfile.TarError, RuntimeError, AssertionError, ValueError)


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


@dataclass(frozen=True)
class SharSummary:
    """What :func:`write_shar` wrote."""

    cuts: int
    shards: int
    seconds: float  # audio, summed over the cuts


def write_shar(
    manifest,
    out_dir,
    shard_size: int = SHARD_SIZE,
    overwrite: bool = False,
    seed: int = 0,
    quiet: bool = True,
) -> SharSummary:
    """Write the cuts of ``manifest`` with their audio as Shar shards of ``shard_size`` cuts in
    ``out_dir``, in a seeded random order (:func:`shuffled`): a manifest sorted by speaker would
    otherwise make shards of one speaker each, and training mixes only a few shards at a time.

    The shards are written into a hidden folder beside ``out_dir`` that takes its place only
    when complete (:func:`~asr.files.write_folder_atomically`): an interrupted run leaves
    ``out_dir`` as it was. Each clip's audio is stored as :func:`stored_audio` says, nothing lost.
    """
    from asr.progress import progress

    out = Path(out_dir)
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    if out.exists() and not overwrite:
        raise ValueError(f"{out}: already exists; give another folder, or --overwrite to replace it")
    if out.exists():  # replaced as a whole: only ever a folder of shards (not a corpus, say)
        others = sorted(p.name for p in out.iterdir() if not _is_shard(p)) if out.is_dir() else [out.name]
        if others:
            raise ValueError(
                f"{out}: holds {others[0]}, which is not a Shar shard: not replaced; give another folder"
            )
    cuts = read_cuts(manifest)
    written = {"cuts": 0, "seconds": 0.0}

    def write(folder: Path) -> None:
        piles = folder / ".piles"  # inside the hidden folder: a killed run leaves nothing beside it
        piles.mkdir()
        order = shuffled(cuts, count_newlines_fast(manifest), piles, seed)
        with (
            TarWriter(str(folder / "recording.%06d.tar"), shard_size) as audio,
            JsonlShardWriter(str(folder / "cuts.%06d.jsonl.gz"), shard_size) as lines,
        ):
            for cut in progress(order, quiet, desc="sharding", unit=" cuts"):
                data, suffix, recording = _stored(cut, manifest)
                audio.write(f"{cut.id}.{suffix}", BytesIO(data))
                audio.write(f"{cut.id}.json", BytesIO(json.dumps(recording.to_dict()).encode()), count=False)
                lines.write(fastcopy(cut, recording=recording, start=0))
                written["cuts"] += 1
                written["seconds"] += cut.duration
        shutil.rmtree(piles)
        if not written["cuts"]:
            raise ValueError(f"{manifest}: the manifest holds no cuts")

    write_folder_atomically(out, write)
    return SharSummary(written["cuts"], math.ceil(written["cuts"] / shard_size), written["seconds"])


def shuffled(cuts: Iterable[Cut], count: int, folder: Path, seed: int) -> Iterator[Cut]:
    """``cuts`` (about ``count`` of them) in a seeded random order, with one pile of cuts in
    memory at a time (:data:`SHUFFLE_PILE`): each cut is dealt to a random pile (a temporary
    JSONL file in ``folder``), then each pile is read and shuffled whole."""
    rng = random.Random(seed)
    piles = min(MAX_PILES, max(1, math.ceil(count / SHUFFLE_PILE)))
    paths = [folder / f"{k}.jsonl.gz" for k in range(piles)]
    piles = [gzip.open(path, "wt", compresslevel=1) for path in paths]
    try:
        for cut in cuts:
            rng.choice(piles).write(json.dumps(cut.to_dict()) + "\n")
    finally:
        for pile in piles:
            pile.close()
    for path in paths:
        pile = list(CutSet.from_jsonl(path))
        rng.shuffle(pile)
        yield from pile
        path.unlink()


def stored_audio(cut: Cut) -> tuple[bytes, str]:
    """The bytes a shard holds for ``cut``'s audio, and their format (the tar member's suffix).

    Nothing is lost and the sample rate is never changed (training resamples, with its speed
    draws, in :class:`~asr.data.CutBatches`):

    - a whole file of integer PCM (8, 16 or 24 bits: wav, aiff...) becomes FLAC of the same
      depth: the same samples in about half the bytes;
    - a whole file of FLAC, of a lossy codec (ogg/vorbis, opus, mp3) or of float or 32-bit
      samples (which FLAC cannot hold) is kept as it is, byte for byte: decoding and
      re-encoding would lose (lossy codecs), or quantise float samples;
    - a part of a file is cut out of it: FLAC of the file's depth for integer PCM, else the
      decoded float samples as 32-bit float WAV;
    - a recording soundfile cannot read whole (an m4a, several files, lhotse transforms such as
      a stored speed factor) is decoded by lhotse, and its float samples stored as float WAV.
    """
    recording, channels = cut.recording, _channels(cut)
    info = _file_info(recording)
    if info is None:
        return _encode(cut.load_audio().T, recording.sampling_rate, "WAV", "FLOAT"), "wav"
    path = recording.sources[0].source
    depth = FLAC_DEPTHS.get(info.subtype)
    start = compute_num_samples(cut.start, info.samplerate)
    frames = compute_num_samples(cut.duration, info.samplerate)
    whole = start == 0 and frames == info.frames and channels == list(range(info.channels))
    if whole and (depth is None or info.format == "FLAC"):
        return Path(path).read_bytes(), info.format.lower()
    # Integer samples read as int32 and written back as integers: no float rounding on the way.
    dtype = "int32" if depth else "float32"
    samples, _ = sf.read(path, start=start, frames=frames, dtype=dtype, always_2d=True)
    if depth:
        return _encode(samples[:, channels], info.samplerate, "FLAC", depth), "flac"
    return _encode(samples[:, channels], info.samplerate, "WAV", "FLOAT"), "wav"


def _stored(cut: Cut, manifest) -> tuple[bytes, str, Recording]:
    """:func:`stored_audio` of ``cut``, with the recording manifest of its shard member (its
    channels the cut's own); a cut without readable audio is an error that names it."""
    if getattr(cut, "recording", None) is None:
        raise ValueError(f"{manifest}: cut {cut.id} has no recording (a cut of one recording each is needed)")
    try:
        data, suffix = stored_audio(cut)
    except Exception as err:  # lhotse and soundfile fail in many ways on a missing or damaged file
        sources = ", ".join(str(s.source) for s in cut.recording.sources)
        raise ValueError(
            f"{manifest}: cut {cut.id}: its audio ({sources}) cannot be read ({type(err).__name__}: {err}); "
            "fix the file or leave the cut out of the manifest"
        ) from None
    recording = to_shar_placeholder(cut.recording, cut)
    recording.sources[0].channels = recording.channel_ids = _channels(cut)
    return data, suffix, recording


def _channels(cut: Cut) -> list[int]:
    return list(cut.channel) if isinstance(cut.channel, list) else [cut.channel]


def _file_info(recording):
    """soundfile's description of ``recording``'s one file, or None when it has several, has
    lhotse transforms, or is a file soundfile cannot read."""
    if len(recording.sources) != 1 or recording.sources[0].type != "file" or recording.transforms:
        return None
    try:
        return sf.info(recording.sources[0].source)
    except Exception:  # not a format libsndfile reads (m4a...): lhotse's other decoders may
        return None


def _encode(samples, rate: int, fmt: str, subtype: str) -> bytes:
    """(S, C) samples as a ``fmt`` file in memory."""
    buffer = BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _is_shard(path: Path) -> bool:
    return bool(CUTS_SHARD.fullmatch(path.name) or AUDIO_SHARD.fullmatch(path.name))


def is_shar(path) -> bool:
    """Whether ``path`` names a Shar folder rather than a manifest file."""
    return Path(path).is_dir()


def shar_shards(folder) -> list[tuple[Path, Path]]:
    """The (cuts, audio) files of each shard of a Shar folder, in shard order, checked as far as
    can be without reading them: every cuts file has its audio tar and every tar its cuts file,
    and every tar ends as a tar does (two empty blocks after its last member), which a file
    cut short (a copy or a write interrupted) does not."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such Shar folder")
    cuts, audio = {}, {}
    for path in folder.iterdir():
        if match := CUTS_SHARD.fullmatch(path.name):
            cuts[match[1]] = path
        elif match := AUDIO_SHARD.fullmatch(path.name):
            audio[match[1]] = path
    if not cuts:
        raise ValueError(f"{folder}: no cuts.NNNNNN.jsonl.gz in it: not a Shar folder (see asr data shard)")
    for shard in sorted(cuts.keys() ^ audio.keys()):
        missing, there = ("recording", cuts) if shard in cuts else ("cuts", audio)
        suffix = "tar" if missing == "recording" else "jsonl.gz"
        raise FileNotFoundError(
            f"{folder / f'{missing}.{shard}.{suffix}'}: missing, while {there[shard].name} is there: "
            "the shards are incomplete; write them again (asr data shard)"
        )
    for path in audio.values():
        _check_tar_end(path)
    return [(cuts[shard], audio[shard]) for shard in sorted(cuts)]


def _check_tar_end(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as tar:
        tar.seek(max(0, size - 1024))
        end = tar.read()
    if size < 1024 or size % 512 or end.count(0) != 1024:
        raise ValueError(
            f"{path}: cut short ({size} bytes, not ending as a tar file does): the shard is "
            "incomplete; write the shards again (asr data shard)"
        )


class SharCuts(LazySharIterator):
    """lhotse's Shar reader, a shard at a time, with clear errors.

    Each shard's cuts and audio are read together by lhotse (``LazySharIterator``); this class
    orders the shards (shuffled by ``seed + epoch`` when ``shuffle_shards``) and names the file
    of a shard that cannot be read. lhotse pairs a cuts file with a shorter tar silently,
    dropping the cuts left over; here that is an error too.

    ``epoch`` chooses the shard order; it goes up by one after each full pass, as lhotse's
    does, and a training sampler sets it to its own epoch (:class:`asr.data.BucketingSampler`).

    ``part=(rank, processes)`` reads only every ``processes``-th shard of the epoch's order from
    the ``rank``-th on: the processes of a distributed run, which all draw the same order, each
    read their own shards, and together every shard once an epoch.
    """

    def __init__(
        self,
        shards: list[tuple[Path, Path]],
        shuffle: bool = False,
        seed: int = 0,
        part: tuple[int, int] = (0, 1),
    ):
        rank, processes = part
        if len(shards) < processes:
            raise ValueError(
                f"{shards[0][0].parent}: {len(shards)} shards for {processes} processes, each of which "
                "reads shards of its own: write it again with a smaller --shard-size (asr data shard)"
            )
        fields = {"cuts": [c for c, _ in shards], "recording": [a for _, a in shards]}
        super().__init__(fields=fields, shuffle_shards=shuffle, seed=seed)
        self.rank, self.processes = rank, processes

    def __iter__(self):
        epoch = self.epoch
        for shard in self._maybe_shuffle_shards(self.shards)[self.rank :: self.processes]:
            for cut in _read_shard(shard["cuts"], shard["recording"]):
                cut.shar_epoch = epoch
                yield cut
        self.epoch = epoch + 1

    def __len__(self) -> int:
        """The number of cuts in all the shards (whatever ``part``), counted from the cuts files
        alone (no audio read)."""
        if self._len is None:
            self._len = sum(_count(path) for path in self.streams["cuts"])
        return self._len


def _count(cuts_file: Path) -> int:
    try:
        return count_newlines_fast(cuts_file)
    except (OSError, EOFError) as err:  # not gzip, cut short
        raise ValueError(
            f"{cuts_file}: cannot be read ({type(err).__name__}: {err}); the shard is damaged or cut "
            "short: write the shards again (asr data shard)"
        ) from None


def _read_shard(cuts_file: Path, audio_file: Path) -> Iterator[Cut]:
    """The cuts of one shard with their audio; a damaged file is an error that names it."""
    read = 0
    try:
        for cut in LazySharIterator(fields={"cuts": [cuts_file], "recording": [audio_file]}):
            read += 1
            yield cut
    except SHARD_ERRORS as err:
        if isinstance(err, FileNotFoundError) and err.filename:
            culprit = Path(err.filename)
        elif isinstance(err, tarfile.TarError | RuntimeError | AssertionError):
            culprit = audio_file
        else:
            culprit = cuts_file
        other = audio_file if culprit == cuts_file else cuts_file
        raise ValueError(
            f"{culprit}: cannot be read after {read} cuts ({type(err).__name__}: {err}); the shard "
            f"(with {other.name}) is damaged or cut short: write the shards again (asr data shard)"
        ) from None
    listed = _count(cuts_file)
    if read < listed:
        raise ValueError(
            f"{audio_file}: holds the audio of {read} of the {listed} cuts of {cuts_file.name}: cut "
            "short; write the shards again (asr data shard)"
        )


def open_shar(folder, shuffle: bool = False, seed: int = 0, part: tuple[int, int] = (0, 1)) -> CutSet:
    """A Shar folder's cuts, lazily, each with its audio in memory (``cut.load_audio()`` decodes
    it); shards in a seeded order that changes every epoch when ``shuffle``; of them, only
    ``part`` (see :class:`SharCuts`). Missing and cut-short shards are found here
    (:func:`shar_shards`); damaged ones when they are read."""
    return CutSet(SharCuts(shar_shards(folder), shuffle=shuffle, seed=seed, part=part))
