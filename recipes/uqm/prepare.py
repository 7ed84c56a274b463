"""uqm: real recorded English speech, the voice acting of The Ur-Quan Masters (Debian non-free).

    python -m recipes.uqm.prepare --out data/uqm [--corpus-dir DIR] [--stage 1 --stop-stage 4] [--num-jobs N]

Debian's ``uqm-voice`` (the 3DO voice pack, ~2,200 Ogg clips, ~11 h, 11,025 Hz) and
``uqm-content`` (the dialogue texts) hold some 20 actors reading the lines of 27 alien
characters. Licence: CC BY-NC-SA 2.5 (printed when preparing; a model trained on it carries
the note). Stages, each resumable:

1. fetch      the two packages from Debian's non-free section through a private apt
              configuration (``recipes.debian``; the machine's own sources are not touched)
              -> ``debian/root``; with ``--corpus-dir`` an unpacked copy is used instead
2. extract    the voice pack's clips and the dialogue texts from the two ``.uqm`` (zip)
              archives -> ``corpus/``
3. manifests  transcripts parsed (``#(LABEL) clip.ogg`` then the lines) and normalised;
              clips dropped by a measured criterion (see :data:`CHARS_PER_SECOND`); whole
              characters held out -> ``cuts_{train,dev_human,test_human}.jsonl.gz``,
              ``text/{train,dev_human,test_human}.txt`` (LM text, and sentences no LM may hold),
              ``skipped.txt``, ``summary.json``
4. voices     new speakers from the training characters: each training clip again with its
              formants and pitch moved (Praat's "Change gender" through praat-parselmouth),
              :data:`VOICE_COPIES` times with drawn shifts -> ``voices/``,
              ``cuts_train_voices.jsonl.gz``

The voice pack's ``3dovoice.rmp`` says which dialogue file each character's clips follow (the
pack's own ``.txt`` for five characters, the game's for the rest); the recipe reads it the same way.
"""

import json
import math
import random
import re
import time
import warnings
import zipfile
import zlib
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.cut import Cut
from lhotse.utils import fastcopy

from asr.progress import progress
from asr.text import normalize_text
from recipes import common, debian

PACKAGES = ("uqm-voice", "uqm-content")
LICENCE = (
    "The Ur-Quan Masters voice acting and dialogue (Debian uqm-voice, uqm-content; non-free): "
    "(C) 1992, 1993, 2002 Toys for Bob, Inc. or their respective creators, licensed CC BY-NC-SA 2.5 "
    "(https://creativecommons.org/licenses/by-nc-sa/2.5/). Models trained on it inherit the "
    "non-commercial, share-alike terms; see recipes/uqm/README.md."
)
# Where the two archives sit in an unpacked package tree or a game install.
CONTENT = "usr/share/games/uqm/content"
ARCHIVES = ("packages/uqm-0.8.0-content.uqm", "addons/uqm-0.8.0-voice.uqm")
LAYOUT = f"{CONTENT}/{ARCHIVES[0]} and {CONTENT}/{ARCHIVES[1]} (dpkg-deb -x of uqm-content and uqm-voice)"
RESOURCE_MAP = "3dovoice/3dovoice.rmp"
# Speaker: the character. Commander Hayes speaks at the starbase before and after it is freed.
SPEAKERS = {"commander": "hayes", "starbase": "hayes"}
# Whole characters held out, chosen for natural, unprocessed voices of different sex and accent:
# Commander Hayes (a human, American), Talana of the Syreen (female) and the nasal VUX for
# testing; the Shofixti Tanaka, the Supox and the Spathi Fwiffo for development.
HELD_OUT = {
    "dev_human": ("shofixti", "supox", "spathi"),
    "test_human": ("hayes", "syreen", "vux"),
}
# Minutes of whole clips each held-out character gives its set: no one voice dominates it.
EVAL_MINUTES = 10
# A clip whose text is read at fewer than 6 or more than 25 characters a second is not the
# text's recording: a label covering part of its clip, or a clip cut short. Natural reading
# runs at 12-16 (measured on this corpus; README).
CHARS_PER_SECOND = (6.0, 25.0)
LABEL = re.compile(r"^#\((?P<label>[^)]*)\)\s*(?P<clip>\S+\.ogg)?\s*$")
# Lines the game shows but no one speaks: stage directions such as "*sigh*".
# Seconds a subtitle boundary may move to fall into the pause between two lines.
SNAP = 0.4
# Stage 4: 20 training characters are few speakers. Each training clip is spoken again by
# VOICE_COPIES new voices: its formants moved by a ratio drawn log-uniformly from FORMANT_SHIFT
# (a shorter or longer vocal tract), its median pitch by that ratio cubed (a smaller speaker
# speaks higher) times a ratio from PITCH_SPREAD, timing unchanged.
VOICE_COPIES = 2
FORMANT_SHIFT = (0.87, 1.18)
PITCH_SPREAD = (0.85, 1.18)
# Praat's pitch search range (Hz) for these voices: the lowest character speaks at ~85 Hz.
PITCH_RANGE = (60.0, 600.0)
STAGE_DIRECTION = re.compile(r"\*(?:sigh|cough|ahem|gasp|giggle|laugh|snicker)\*", re.IGNORECASE)


@dataclass(frozen=True)
class Line:
    """One voiced dialogue entry: its clip, the subtitle lines shown while it plays, and how
    long each line but the last is shown (milliseconds, from the voice pack's ``.ts`` file)."""

    character: str
    label: str
    clip: str  # path under the corpus folder, e.g. 3dovoice/spathi/spathi-000.ogg
    lines: tuple[str, ...]
    timings: tuple[int, ...] = ()


def parse_dialogue(text: str, character: str, clips: str = "") -> list[Line]:
    """The voiced entries of a dialogue file: ``#(LABEL)<TAB>clip.ogg`` then text lines up to the
    next label. Entries without a clip (text only, never spoken) are left out."""
    entries, current, body = [], None, []

    def close():
        if current is not None and current[1]:
            spoken = tuple(part.strip() for part in body if part.strip())
            entries.append(Line(character, current[0], f"{clips}{current[1]}", spoken))

    for raw in text.splitlines():
        match = LABEL.match(raw.strip())
        if match:
            close()
            current, body = (match["label"], match["clip"]), []
        elif current is not None:
            body.append(raw)
    close()
    return entries


def parse_timings(text: str) -> dict[str, tuple[int, ...]]:
    """``#(LABEL) 8502,3188,...`` lines of a ``.ts`` file -> label -> milliseconds per subtitle line."""
    timings = {}
    for raw in text.splitlines():
        match = re.match(r"^#\((?P<label>[^)]*)\)\s*(?P<ms>[\d,\s]*)$", raw.strip())
        if match:
            timings[match["label"]] = tuple(int(ms) for ms in match["ms"].replace(" ", "").split(",") if ms)
    return timings


def read_resource_map(text: str) -> dict[str, tuple[str, str, str]]:
    """``comm.<character>.dialogue = CONVERSATION:<txt>:<clip dir>:<timings>`` lines ->
    character -> (dialogue file, clip folder, timings file), relative to the corpus folder."""
    dialogues = {}
    for raw in text.splitlines():
        key, _, value = raw.partition("=")
        parts = value.strip().split(":")
        if key.strip().endswith(".dialogue") and len(parts) == 4 and parts[0] == "CONVERSATION":
            # The clip folder names the character ("comm.yehat.rebel.dialogue" is yehatrebels/).
            files = tuple(p.removeprefix("addons/") for p in parts[1:])
            dialogues[Path(files[1]).name] = files
    return dialogues


def stage_fetch(out: Path) -> Path:
    """The two packages, downloaded and unpacked under ``out/debian/root`` (once)."""
    return debian.download(list(PACKAGES), out / "debian", out.parent / "apt")


def stage_extract(root: Path, out: Path) -> Path:
    """The clips, dialogue texts and timings of the archives under ``root`` -> ``out/corpus`` (once)."""
    corpus = out / "corpus"
    done = corpus / ".extracted"
    if done.exists():
        return corpus
    content = common.locate(root, [f"{CONTENT}/{a}" for a in ARCHIVES], LAYOUT) / CONTENT
    for archive in ARCHIVES:
        with zipfile.ZipFile(content / archive) as package:
            wanted = [n for n in package.namelist() if n.startswith(("3dovoice/", "base/comm/"))]
            package.extractall(corpus, [n for n in wanted if n.endswith((".ogg", ".txt", ".ts", ".rmp"))])
    done.touch()
    return corpus


def read_lines(corpus: Path, skipped: common.SkipLog) -> list[Line]:
    """Every voiced entry of every character, from the dialogue and timing files the resource
    map names; each clip once (a few entries share a clip: the first keeps it)."""
    resource_map = corpus / RESOURCE_MAP
    if not resource_map.is_file():
        raise common.CorpusError(f"{resource_map} missing: the voice pack was not extracted")
    entries, seen = [], set()
    for character, (dialogue, clips, timing) in sorted(read_resource_map(resource_map.read_text()).items()):
        path = corpus / dialogue
        if not path.is_file():
            skipped.add(path, f"dialogue file of {character} missing")
            continue
        timings = parse_timings((corpus / timing).read_text()) if (corpus / timing).is_file() else {}
        for entry in parse_dialogue(path.read_text(encoding="latin-1"), character, clips):
            if entry.clip in seen:
                continue
            seen.add(entry.clip)
            entries.append(Line(**{**entry.__dict__, "timings": timings.get(entry.label, ())}))
    return entries


def transcript(text: str) -> str:
    """The spoken words of a dialogue line, normalised: stage directions go, numbers are spelled."""
    return normalize_text(STAGE_DIRECTION.sub(" ", text))


def quietest(samples: np.ndarray, rate: int, at: float) -> float:
    """The centre of the quietest 50 ms within :data:`SNAP` seconds of ``at`` (seconds): where a
    subtitle boundary most likely falls between two spoken lines."""
    hop = int(0.01 * rate)
    start, end = max(0, int((at - SNAP) * rate)), min(len(samples), int((at + SNAP) * rate))
    frames = samples[start:end][: (end - start) // hop * hop].reshape(-1, hop)
    if len(frames) < 5:
        return at
    energy = np.convolve((frames**2).mean(axis=1), np.ones(5), mode="valid")
    return (start + (int(np.argmin(energy)) + 2.5) * hop) / rate


def segments(entry: Line, samples: np.ndarray, rate: int) -> list[tuple[float, float, str]]:
    """(start, end, text) of each spoken line of ``entry``'s clip.

    A clip with one timing per line but the last is cut at those times, each boundary moved to
    the quietest moment near it; otherwise the clip is one segment with all its lines.
    """
    duration = len(samples) / rate
    if len(entry.timings) != len(entry.lines) - 1 or not entry.timings:
        return [(0.0, duration, " ".join(entry.lines))]
    bounds = [0.0]
    for ms in entry.timings:
        bounds.append(min(duration, bounds[-1] + ms / 1000))
    cuts = [0.0, *(quietest(samples, rate, b) for b in bounds[1:]), duration]
    return [(cuts[i], cuts[i + 1], text) for i, text in enumerate(entry.lines) if cuts[i + 1] > cuts[i]]


def make_cuts(corpus: Path, entries: list[Line], skipped: common.SkipLog) -> tuple[CutSet, Counter]:
    """One cut per spoken line whose transcript fits its duration; dropped seconds by reason."""
    recordings, supervisions, dropped = [], [], Counter()
    low, high = CHARS_PER_SECOND
    for entry in progress(entries, desc="clips", unit="clip", leave=False):
        path = corpus / entry.clip
        recording = common.read_recording(path, f"uqm-{Path(entry.clip).stem}", skipped)
        if recording is None:
            continue
        recordings.append(recording)
        samples = recording.load_audio()[0]
        for number, (start, end, line) in enumerate(segments(entry, samples, recording.sampling_rate)):
            text, duration = transcript(line), end - start
            rate = len(text) / duration
            if not low <= rate <= high:
                where = f"{path} line {number + 1} ({start:.2f}-{end:.2f} s)"
                skipped.add(
                    where, f"{rate:.1f} characters a second (kept: {low:g}-{high:g}): text and audio disagree"
                )
                dropped["too slow" if rate < low else "too fast"] += duration
                continue
            speaker = SPEAKERS.get(entry.character, entry.character)
            custom = {"character": entry.character, "label": entry.label, "orig_text": line}
            supervisions.append(
                SupervisionSegment(
                    id=f"{recording.id}-{number:02d}", recording_id=recording.id, start=start,
                    duration=duration, channel=0, text=text, language="English", speaker=speaker,
                    custom=custom,
                )
            )  # fmt: skip
    cuts = CutSet.from_manifests(
        recordings=RecordingSet.from_recordings(recordings),
        supervisions=SupervisionSet.from_segments(supervisions),
    )
    return cuts.trim_to_supervisions(keep_overlapping=False).to_eager(), dropped


def split_by_character(cuts: CutSet, seed: int = 0) -> dict[str, CutSet]:
    """Whole speakers of :data:`HELD_OUT` into dev_human and test_human, the rest into train.

    Each held-out speaker gives at most :data:`EVAL_MINUTES` of whole clips (drawn with
    ``seed``), so that no one voice dominates a set; the rest of its clips go to "unused".
    """
    held = {speaker: split for split, speakers in HELD_OUT.items() for speaker in speakers}
    parts = {"train": [], **{split: [] for split in HELD_OUT}, "unused": []}
    clips: dict[str, dict[str, list]] = {speaker: {} for speaker in held}
    for cut in cuts:
        speaker = cut.supervisions[0].speaker
        if speaker in held:
            clips[speaker].setdefault(cut.recording_id, []).append(cut)
        else:
            parts["train"].append(cut)
    for speaker, by_clip in clips.items():
        order = sorted(by_clip)
        random.Random(seed).shuffle(order)
        taken = 0.0
        for clip in order:
            parts[held[speaker] if taken < EVAL_MINUTES * 60 else "unused"] += by_clip[clip]
            taken += sum(cut.duration for cut in by_clip[clip])
    return {split: CutSet.from_cuts(sorted(part, key=lambda c: c.id)) for split, part in parts.items()}


def stage_manifests(corpus: Path, out: Path) -> dict[str, Path]:
    """Cut manifests, held-out sentences, skipped.txt and summary.json (once)."""
    splits = ("train", *HELD_OUT)
    done = common.existing_manifests(out, splits)
    if done:
        return done
    skipped = common.SkipLog()
    cuts, dropped = make_cuts(corpus, read_lines(corpus, skipped), skipped)
    parts = split_by_character(cuts)
    unused = parts.pop("unused")
    # No held-out sentence may be trained on: the characters repeat a few stock lines.
    held_texts = {s.text for split in HELD_OUT for c in parts[split] for s in c.supervisions}
    repeated = parts["train"].filter(lambda c: c.supervisions[0].text in held_texts).to_eager()
    parts["train"] = parts["train"].filter(lambda c: c.supervisions[0].text not in held_texts).to_eager()
    dropped["text of a dev_human or test_human clip"] = sum(cut.duration for cut in repeated)
    dropped["held-out speakers beyond their share"] = sum(cut.duration for cut in unused)
    # The sentences of each split (LM text, and what LM text must not hold) first: the
    # manifests, written last, mark the stage done.
    (out / "text").mkdir(exist_ok=True)
    for split in parts:
        texts = sorted({s.text for c in parts[split] for s in c.supervisions})
        common.write_atomically(
            out / "text" / f"{split}.txt", lambda p, t=texts: p.write_text("\n".join(t) + "\n")
        )
    paths = common.write_splits(out, parts, skipped)
    written = {split: CutSet.from_file(path) for split, path in paths.items()}
    summary = {
        "dropped_hours": {reason: round(seconds / 3600, 3) for reason, seconds in dropped.items()},
        "splits": {
            split: {
                "utterances": len(part),
                "hours": round(sum(c.duration for c in part) / 3600, 3),
                "speakers": dict(Counter(c.supervisions[0].speaker for c in part)),
            }
            for split, part in written.items()
        },
    }
    common.write_atomically(
        out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=1) + "\n")
    )
    for reason, seconds in sorted(dropped.items()):
        print(f"dropped {reason}: {seconds / 3600:.2f} h")
    return paths


def voice_shifts(cut_id: str, copies: int = VOICE_COPIES) -> list[tuple[float, float]]:
    """(formant ratio, pitch ratio) of each new voice of a clip: drawn from its id, so a resumed
    run draws the same."""
    rng = np.random.default_rng(zlib.crc32(cut_id.encode()))
    shifts = []
    for _ in range(copies):
        formant = math.exp(rng.uniform(*np.log(FORMANT_SHIFT)))
        pitch = formant**3 * math.exp(rng.uniform(*np.log(PITCH_SPREAD)))
        shifts.append((round(formant, 3), round(pitch, 3)))
    return shifts


def shift_voice(samples: np.ndarray, rate: int, formant: float, pitch: float) -> np.ndarray:
    """``samples`` in another voice: formants x ``formant``, median pitch x ``pitch``, the same
    duration and peak level (Praat's "Change gender": pitch-synchronous overlap-add)."""
    import parselmouth  # only this stage needs it
    from parselmouth.praat import call

    sound = parselmouth.Sound(samples.astype(np.float64), sampling_frequency=rate)
    contour = sound.to_pitch(pitch_floor=PITCH_RANGE[0], pitch_ceiling=PITCH_RANGE[1])
    median = call(contour, "Get quantile", 0, 0, 0.5, "Hertz")
    target = 0.0 if math.isnan(median) else median * pitch  # 0: no voiced frame, pitch kept
    with warnings.catch_warnings():  # a clip without a voiced frame gets its formants moved only
        warnings.simplefilter("ignore", parselmouth.PraatWarning)
        shifted = call(sound, "Change gender", *PITCH_RANGE, formant, target, 1.0, 1.0).values[0]
    peak = np.abs(shifted).max()
    if peak > 0:
        shifted *= np.abs(samples).max() / peak
    return shifted.astype(np.float32)


def new_voices(cut: Cut, folder: Path) -> list[Cut] | str:
    """``cut`` spoken by its new voices (each written once as FLAC under ``folder``), or why not."""
    supervision = cut.supervisions[0]
    made = []
    try:
        samples = None
        for number, (formant, pitch) in enumerate(voice_shifts(cut.id), 1):
            path = folder / supervision.speaker / f"{cut.id}-v{number}.flac"
            if not path.exists():
                samples = cut.load_audio()[0] if samples is None else samples
                shifted = shift_voice(samples, cut.sampling_rate, formant, pitch)
                path.parent.mkdir(parents=True, exist_ok=True)
                write = lambda p, x=shifted: sf.write(p, x, cut.sampling_rate, format="FLAC")  # noqa: E731
                common.write_atomically(path, write)
            recording = Recording.from_file(path, recording_id=path.stem)
            voiced = fastcopy(
                supervision, id=path.stem, recording_id=path.stem, start=0.0, duration=recording.duration,
                speaker=f"{supervision.speaker}-v{number}",
                custom={**(supervision.custom or {}), "formant": formant, "pitch": pitch},
            )  # fmt: skip
            made.append(fastcopy(recording.to_cut(), supervisions=[voiced]))
    except Exception as error:  # a clip that fails to decode or to shift is listed, not fatal
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return made


def stage_voices(out: Path, workers: int | None = None) -> Path:
    """The training cuts spoken again by new voices -> ``cuts_train_voices.jsonl.gz`` (once;
    audio written earlier is reused when an interrupted run starts again)."""
    path = common.manifest_path(out, "train_voices")
    if path.exists():
        return path
    source = common.manifest_path(out, "train")
    if not source.is_file():
        raise common.CorpusError(f"{source} missing: stage 4 gives new voices to stage 3's training cuts")
    train = CutSet.from_file(source).to_eager()
    skipped, made = common.SkipLog(), []
    started = time.perf_counter()
    with ProcessPoolExecutor(workers or common.available_cores()) as pool:
        results = pool.map(new_voices, train, [out / "voices"] * len(train), chunksize=8)
        results = progress(results, total=len(train), desc="voices", unit="clip")
        for cut, result in zip(train, results, strict=True):
            if isinstance(result, str):
                skipped.add(f"{cut.recording.sources[0].source} ({cut.id})", result)
            else:
                made += result
    if not made:
        report = skipped.write(out / "voices")
        raise common.CorpusError(f"no training clip could be given a new voice (see {report})")
    common.write_atomically(path, CutSet.from_cuts(made).to_file)
    report = skipped.write(out / "voices")
    hours = sum(c.duration for c in made) / 3600
    minutes = (time.perf_counter() - started) / 60
    print(f"voices: {len(made)} utterances, {hours:.2f} h in {minutes:.1f} min -> {path}")
    if skipped.entries:
        print(f"{len(skipped.entries)} clips skipped, listed with the reason in {report}")
    return path


def prepare(
    out: Path, corpus_dir: Path | None = None, stage: int = 1, stop_stage: int = 4,
    num_jobs: int | None = None,
) -> dict[str, Path] | None:  # fmt: skip
    """Run stages ``stage``..``stop_stage``; ``corpus_dir`` (unpacked packages) replaces stage 1;
    stage 4 runs ``num_jobs`` processes (default: the available cores). Returns the manifests of
    stages 3 and 4 that ran."""
    print(LICENCE)
    out.mkdir(parents=True, exist_ok=True)
    root = corpus_dir
    if root is None and stage <= 2 and stop_stage >= 1:  # stage 2 extracts what stage 1 fetched
        root = stage_fetch(out)
    corpus = stage_extract(root, out) if stage <= 2 <= stop_stage else out / "corpus"
    manifests = stage_manifests(corpus, out) if stage <= 3 <= stop_stage else None
    if stage <= 4 <= stop_stage:
        manifests = {**(manifests or {}), "train_voices": stage_voices(out, num_jobs)}
    return manifests


def main(argv: list[str] | None = None) -> None:
    common.staged_main(
        prepare, argv, "uqm", __doc__.split("\n\n")[0],
        corpus_help="uqm-voice and uqm-content already unpacked (dpkg-deb -x), or a game install",
        stop_stage=4, parallel=True,
    )  # fmt: skip


if __name__ == "__main__":
    main()
