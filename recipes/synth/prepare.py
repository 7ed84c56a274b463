"""The synth recipe: an English speech corpus made offline from Debian's synthesizers.

    python -m recipes.synth.prepare --out data/synth [--size small|default] [--stage 1 --stop-stage 4]
        [--allow-missing-voices]

Stages (each resumable; a finished stage does nothing when run again):
1. text      sentences from Debian text packages, de-duplicated, split by sentence
             -> text/{train,dev,test}.tsv (spoken form, transcript)
2. plan      a voice, rate, pitch and effect chain drawn for every clip, and the room bank
             -> plan/<split>.jsonl, rooms.npz
3. speech    every planned clip rendered, augmented and written as 16 kHz FLAC
             -> audio/<split>/<nnn>/<id>.flac (clips already on disk are kept; editing
             the voices or effects in this recipe re-plans and re-renders the clips it changes).
             A voice that is not installed stops it, naming what to install; with
             --allow-missing-voices its clips are skipped (and listed) instead
4. manifests lhotse cut manifests of the clips on disk and a summary (clips, hours, engines,
             speakers per split and per engine) -> cuts_<split>.jsonl.gz, summary.json
5. lm        language model text (every sentence of the sources and WordNet's definitions,
             none holding a dev/test sentence) and a word 3-gram of it
             -> lm/{train,dev}.txt, lm/words.arpa

Splits: ``train`` (augmented), ``dev`` and ``test`` (clean, seen voices, unseen sentences),
``test_unseen_voice`` (the test sentences spoken by flite's awb and rms, voices whose
speakers are in no training voice). The sentence split and every clip's draws depend only
on the seed, not on the size: a ``small`` corpus is the first clips of the ``default`` one,
so growing it renders only the new clips. The training clips from ``ADDED_VOICES_FROM`` on are
spoken by the voices added after the first corpus was rendered, so that corpus keeps every
clip it has.
"""

import argparse
import hashlib
import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from itertools import groupby
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from lhotse import CutSet

from asr.ngram import build_arpa, without_sentences
from asr.progress import progress
from asr.text import read_text_file
from recipes.common import available_cores, clip_cuts, write_atomically
from recipes.synth import augment, text, voices

# Clips per split. dev and test sentences are reserved at the largest size whatever the size,
# so no size ever trains on another size's test sentences.
SIZES = {
    "small": {"train": 400, "dev": 100, "test": 100},
    "default": {"train": 48000, "dev": 1000, "test": 1000},
}
RESERVED = {"dev": 1000, "test": 1000}
SPLITS = ("train", "dev", "test", "test_unseen_voice")
# Training voices and their shares of the clips: the more natural festival and flite voices
# get more than espeak-ng, whose many accents and variants still make it the most varied.
VOICE_SHARES = {
    ("espeak", None): 0.34,
    ("festival", "kal_diphone"): 0.11,
    ("festival", "ked_diphone"): 0.11,
    ("festival", "cmu_us_slt_arctic_hts"): 0.11,
    ("flite", "kal16"): 0.16,
    ("flite", "slt"): 0.17,
}
# The voices added since, and their shares of the training clips from ADDED_VOICES_FROM on. The
# first 36,000 training clips and all dev and test clips keep the voices above and every draw, so
# the corpus rendered with them stays valid and growing it renders only the new clips. 12,000
# clips (~10.8 h) give each new speaker 700-1,700 clips (festival's and flite's first voices
# have 4,000-6,000 each) and make a quarter of the training set; training is bounded by updates,
# not epochs, so they cost rendering time (~9 min) but no training time.
ADDED_VOICES_FROM = 36000
ADDED_VOICE_SHARES = {
    ("piper", "joe"): 0.14,  # the one neural voice: the most natural
    **{("rhvoice", name): 0.085 for name in ("bdl", "clb", "lyubov", "evgeniy-eng")},
    # Of espeak-ng's 16 foreign-accented MBROLA English voices only German de4 is understood about
    # as well as the native ones (PocketSphinx WER 52 % on 20 sentences, against 39-55 % for us1-3
    # and en1); the others (73-96 %) are as garbled as espeak-ng's own voices (87-95 %).
    **{("mbrola", name): 0.06 for name in ("us1", "us2", "us3", "en1", "de4-en")},
    ("pico", "en-US"): 0.07,
    ("pico", "en-GB"): 0.07,
    ("festival", "rab_diphone"): 0.08,
}
RATE = (0.8, 1.25)  # duration factor of the synthesizer
PITCH = (0.75, 1.3)  # f0 factor
CHUNK = 32  # clips per worker task (festival renders a chunk in one process)


def stage_text(out: Path, seed: int) -> None:
    """Sentences from every source, each once, shuffled and split by sentence."""
    if all((out / "text" / f"{s}.tsv").exists() for s in ("train", "dev", "test")):
        return
    unique: dict[str, str] = {}  # transcript -> spoken form; one clip per transcript
    for pairs in text.read_all().values():
        for spoken, transcript in pairs:
            unique.setdefault(transcript, spoken)
    items = sorted(unique.items())
    random.Random(seed).shuffle(items)
    bounds = {"dev": (0, RESERVED["dev"]), "test": (RESERVED["dev"], RESERVED["dev"] + RESERVED["test"])}
    bounds["train"] = (bounds["test"][1], len(items))
    (out / "text").mkdir(parents=True, exist_ok=True)
    for split, (start, end) in bounds.items():
        lines = "".join(f"{spoken}\t{transcript}\n" for transcript, spoken in items[start:end])
        write_atomically(out / "text" / f"{split}.tsv", lambda p, lines=lines: p.write_text(lines))
    print(f"text: {len(items)} unique sentences; {bounds['train'][1] - bounds['train'][0]} for training")


def _read_text(out: Path, split: str) -> list[tuple[str, str]]:
    return [tuple(line.split("\t")) for line in (out / "text" / f"{split}.tsv").read_text().splitlines()]


def _draw_voice(rng: np.random.Generator, variants: list[str], shares: dict) -> voices.Voice:
    keys = list(shares)
    engine, name = keys[rng.choice(len(keys), p=np.array(list(shares.values())))]
    if engine == "espeak":
        name = f"{rng.choice(voices.ESPEAK_ACCENTS)}+{rng.choice(variants)}"
    return voices.Voice(
        engine, name, round(float(rng.uniform(*RATE)), 3), round(float(rng.uniform(*PITCH)), 3)
    )


def plan_split(split: str, sentences: list[tuple[str, str]], seed: int, variants: list[str]) -> list[dict]:
    """One record per clip: id, spoken form, transcript, voice and effects."""
    return [
        plan_clip(split, i, spoken, transcript, seed, variants)
        for i, (spoken, transcript) in enumerate(sentences)
    ]


def plan_clip(split: str, i: int, spoken: str, transcript: str, seed: int, variants: list[str]) -> dict:
    """The record of clip ``i`` of ``split``."""
    # One generator per clip: its draws do not depend on how many clips the split has.
    rng = np.random.default_rng([seed, SPLITS.index(split), i])
    if split == "test_unseen_voice":
        voice, fx = voices.Voice("flite", voices.HELD_OUT_VOICES[i % 2]), augment.Effects()
    else:
        added = split == "train" and i >= ADDED_VOICES_FROM
        voice = _draw_voice(rng, variants, ADDED_VOICE_SHARES if added else VOICE_SHARES)
        fx = augment.draw(rng, augment.AugmentConfig()) if split == "train" else augment.Effects()
    clip_id = f"synth-{split}-{i:06d}"
    audio = f"audio/{split}/{i // 1000:03d}/{clip_id}.flac"
    record = {"id": clip_id, "spoken": spoken, "text": transcript, "audio": audio}
    return {**record, "voice": asdict(voice), "effects": fx.to_dict()}


def _plan_fingerprint(counts: dict, seed: int, variants: list[str]) -> str:
    """Everything the plan depends on: sizes, seed, voices, draw ranges and the drawing code."""
    shares = [list(VOICE_SHARES.items()), ADDED_VOICES_FROM, list(ADDED_VOICE_SHARES.items())]
    settings = [counts, seed, variants, shares, RATE, PITCH, asdict(augment.AugmentConfig())]
    digest = hashlib.sha256(json.dumps(settings, default=str).encode())
    for module in (__file__, augment.__file__, voices.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()


def stage_plan(out: Path, size: str, seed: int) -> None:
    counts = {**SIZES[size], "test_unseen_voice": SIZES[size]["test"]}
    variants = voices.espeak_variants()
    (out / "plan").mkdir(exist_ok=True)
    fingerprint = _plan_fingerprint(counts, seed, variants)
    stamp = out / "plan" / "fingerprint"
    if stamp.exists() and stamp.read_text() == fingerprint and (out / "rooms.npz").exists():
        return
    # The room bank is drawn again too: edited room code changes the clips that use a room.
    rooms, bank = augment.make_rooms(augment.AugmentConfig().rooms, seed), out / "rooms.npz"
    rooms_changed = not bank.exists() or not _same_arrays(_load_arrays(bank), rooms)
    if rooms_changed:
        write_atomically(bank, lambda p: _save_arrays(p, rooms))
    for split, count in counts.items():
        path = out / "plan" / f"{split}.jsonl"
        sentences = _read_text(out, "test" if split == "test_unseen_voice" else split)[:count]
        if len(sentences) < count:
            raise ValueError(f"{split}: {count} clips asked for, only {len(sentences)} sentences available")
        records = plan_split(split, sentences, seed, variants)
        old = _read_plan(out, split) if path.exists() else []
        # A clip whose draws or room changed (the recipe's voices or effects were edited) is
        # rendered again; the others, and a smaller plan's clips when the corpus grows, are kept.
        for new, previous in zip(records, old, strict=False):  # sizes differ when it grows
            if new != previous or (rooms_changed and "room" in previous["effects"]):
                (out / previous["audio"]).unlink(missing_ok=True)
        if records == old:
            continue
        write_atomically(path, lambda p, r=records: p.write_text("".join(json.dumps(x) + "\n" for x in r)))
    write_atomically(stamp, lambda p: p.write_text(fingerprint))


def _save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, *arrays)


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as bank:  # np.savez names them arr_0, arr_1, ...
        return [bank[k] for k in sorted(bank.files, key=lambda k: int(k.split("_")[1]))]


def _same_arrays(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _read_plan(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / "plan" / f"{split}.jsonl").open()]


_WORKER: dict = {}  # per-process state: the room bank and the music tracks


def _init_worker(out: Path) -> None:
    _WORKER["rooms"] = _load_arrays(out / "rooms.npz")
    _WORKER["music"] = augment.load_music()


def _render_chunk(out: Path, clips: list[dict]) -> float:
    """Render, augment and write clips of one batch key; returns seconds of audio."""
    effects = [augment.Effects(**c["effects"]) for c in clips]
    # Pre-compensate the tempo change of the vocal tract perturbation (it divides durations by vtl).
    requests = [
        (c["spoken"], voices.Voice(**{**c["voice"], "rate": c["voice"]["rate"] * fx.vtl}))
        for c, fx in zip(clips, effects, strict=True)
    ]
    seconds = 0.0
    for clip, fx, (samples, rate) in zip(clips, effects, voices.render(requests), strict=True):
        if rate != augment.SAMPLE_RATE:
            samples = soxr.resample(samples, rate, augment.SAMPLE_RATE).astype(np.float32)
        samples = augment.apply(samples, fx, _WORKER["rooms"], _WORKER["music"])
        path = out / clip["audio"]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda p, s=samples: sf.write(p, s, augment.SAMPLE_RATE, format="FLAC"))
        seconds += len(samples) / augment.SAMPLE_RATE
    return seconds


def stage_speech(out: Path, workers: int, allow_missing_voices: bool = False) -> None:
    todo = [c for split in SPLITS for c in _read_plan(out, split) if not (out / c["audio"]).exists()]
    todo = _installed_voices_only(todo, allow_missing_voices)
    if not todo:
        return
    key = lambda c: voices.batch_key(voices.Voice(**c["voice"]))  # noqa: E731
    chunks = []
    for _, group in groupby(sorted(todo, key=key), key=key):
        group = list(group)
        chunks += [group[i : i + CHUNK] for i in range(0, len(group), CHUNK)]
    random.Random(0).shuffle(chunks)  # engines interleaved: the progress bar's rate is an honest estimate
    started = time.perf_counter()
    audio = 0.0
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(out,)) as pool:
        bar = progress(total=len(todo), desc="speech", unit="clip")
        for chunk, seconds in zip(chunks, pool.map(_render_chunk, [out] * len(chunks), chunks), strict=True):
            audio += seconds
            bar.update(len(chunk))
        bar.close()
    elapsed = time.perf_counter() - started
    print(f"speech: {len(todo)} clips, {audio / 3600:.2f} h of audio in {elapsed / 60:.1f} min")


def _voice(clip: dict) -> voices.Voice:
    """The clip's voice, without its rate and pitch."""
    return voices.Voice(clip["voice"]["engine"], clip["voice"]["name"])


def _installed_voices_only(clips: list[dict], allow_missing: bool) -> list[dict]:
    """``clips`` without those whose voice is not installed here, which are listed; unless
    ``allow_missing``, such clips stop the recipe with a message saying what to install."""
    missing = {v: voices.install_command(v) for v in {_voice(c) for c in clips} if voices.missing_parts(v)}
    if not missing:
        return clips
    counts = Counter(_voice(c) for c in clips if _voice(c) in missing)
    listing = ", ".join(
        f"{v.speaker} ({n} clips)" for v, n in sorted(counts.items(), key=lambda x: x[0].speaker)
    )
    commands = "; ".join(f"`{command}`" for command in sorted(set(missing.values())))
    if not allow_missing:
        raise voices.MissingSynthesizer(
            f"voices not installed: {listing}. Run {commands} (or `make setup`), "
            "or pass --allow-missing-voices to go on without them"
        )
    print(
        f"speech: skipped {counts.total()} clips of voices not installed: {listing}; to add them: {commands}"
    )
    return [c for c in clips if _voice(c) not in missing]


def _cuts(out: Path, clips: list[dict]) -> CutSet:
    return clip_cuts(
        (c["id"], out / c["audio"], c["text"], f"{c['voice']['engine']}:{c['voice']['name']}",
         {"voice": c["voice"], "effects": c["effects"]})
        for c in clips
    )  # fmt: skip


def stage_manifests(out: Path, allow_missing_voices: bool = False) -> dict:
    summary = {}
    for split in SPLITS:
        path = out / f"cuts_{split}.jsonl.gz"
        clips = _clips_on_disk(out, split, allow_missing_voices)
        plan = out / "plan" / f"{split}.jsonl"
        fresh = path.exists() and path.stat().st_mtime_ns >= plan.stat().st_mtime_ns  # not re-planned since
        cuts = CutSet.from_file(path) if fresh else None
        if cuts is None or len(cuts) != len(clips):  # also: clips of a voice skipped before, now rendered
            write_atomically(path, lambda p, c=clips: _cuts(out, c).to_file(p))
            cuts = CutSet.from_file(path)
        summary[split] = _summary(clips, cuts)
        row = summary[split]
        print(f"{split:>18}: {row['clips']:6d} clips {row['hours']:6.2f} h {row['engines']:2d} engines "
              f"{row['speakers']:4d} voices {row['words']:6d} distinct words")  # fmt: skip
        for engine, part in row["by_engine"].items():
            print(
                f"{engine:>26}: {part['clips']:6d} clips {part['hours']:6.2f} h {part['speakers']:4d} voices"
            )
    write_atomically(out / "summary.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary


def _clips_on_disk(out: Path, split: str, allow_missing: bool) -> list[dict]:
    """The planned clips of ``split`` whose audio is on disk: all of them, unless ``allow_missing``."""
    clips = _read_plan(out, split)
    on_disk = [c for c in clips if (out / c["audio"]).exists()]
    if len(on_disk) < len(clips) and not allow_missing:
        first = next(c for c in clips if not (out / c["audio"]).exists())
        raise ValueError(
            f"{split}: {len(clips) - len(on_disk)} planned clips have no audio "
            f"(first {out / first['audio']}): run stage 3 (speech), or pass --allow-missing-voices "
            "to leave them out"
        )
    return on_disk


def _summary(clips: list[dict], cuts: CutSet) -> dict:
    """Clips, hours, engines, voices and distinct words of a split; clips, hours and voices per engine."""

    def count(group: list) -> dict:
        hours = round(sum(c.duration for c in group) / 3600, 2)
        return {
            "clips": len(group),
            "hours": hours,
            "speakers": len({c.supervisions[0].speaker for c in group}),
        }

    by_engine: dict[str, list] = {}
    for cut in cuts:  # speakers are "<engine>:<voice>"
        by_engine.setdefault(cut.supervisions[0].speaker.split(":")[0], []).append(cut)
    return {
        **count(list(cuts)),
        "engines": len(by_engine),
        "words": len({w for c in clips for w in c["text"].split()}),
        "by_engine": {engine: count(group) for engine, group in sorted(by_engine.items())},
    }


def stage_lm(out: Path) -> None:
    """Language model text, one sentence per line, and a word 3-gram of the training text.

    The training text is every sentence of the recipe's sources whatever its length (also
    those no clip speaks) and WordNet's definitions, less every line that holds a dev or test
    sentence; the dev text is the dev transcripts.
    """
    (out / "lm").mkdir(exist_ok=True)
    train, dev = out / "lm" / "train.txt", out / "lm" / "dev.txt"
    if not dev.exists():
        lines = "".join(t + "\n" for _, t in _read_text(out, "dev"))
        write_atomically(dev, lambda p: p.write_text(lines))
    if not train.exists():
        held_out = [t for split in ("dev", "test") for _, t in _read_text(out, split)]
        lines = "".join(t + "\n" for t in without_sentences(dict.fromkeys(text.lm_sentences()), held_out))
        write_atomically(train, lambda p: p.write_text(lines))
    if not (out / "lm" / "words.arpa").exists():
        build_arpa(read_text_file(out / "lm" / "train.txt"), out / "lm" / "words.arpa", order=3)
        print(f"lm: {out / 'lm' / 'words.arpa'} from {out / 'lm' / 'train.txt'}")


def prepare(
    out,
    size: str = "default",
    seed: int = 0,
    stage: int = 1,
    stop_stage: int = 5,
    workers: int | None = None,
    allow_missing_voices: bool = False,
):
    """Run stages ``stage``..``stop_stage`` into ``out``; returns the manifest paths by split.

    ``workers``: rendering processes (default: the cores this process may use).

    ``allow_missing_voices``: leave out the clips of voices not installed here (listed), rather
    than stop.
    """
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "settings.json"
    if settings.exists() and json.loads(settings.read_text())["seed"] != seed:
        raise ValueError(f"{out} was made with another seed; remove it or choose another --out")
    settings.write_text(json.dumps({"seed": seed}) + "\n")
    steps = {
        1: lambda: stage_text(out, seed),
        2: lambda: stage_plan(out, size, seed),
        3: lambda: stage_speech(out, workers or available_cores(), allow_missing_voices),
        4: lambda: stage_manifests(out, allow_missing_voices),
        5: lambda: stage_lm(out),
    }
    for number in range(stage, stop_stage + 1):
        steps[number]()
    return {split: out / f"cuts_{split}.jsonl.gz" for split in SPLITS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.synth.prepare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=sorted(SIZES), default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", type=int, default=1, choices=range(1, 6))
    parser.add_argument("--stop-stage", type=int, default=5, choices=range(1, 6))
    parser.add_argument(
        "--num-jobs", "--workers", dest="workers", type=int,
        help=f"rendering processes (default: the cores this process may use, {available_cores()} here)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-missing-voices",
        action="store_true",
        help="leave out (and list) the clips of voices not installed here instead of stopping",
    )
    args = parser.parse_args(argv)
    try:
        prepare(
            args.out,
            args.size,
            args.seed,
            args.stage,
            args.stop_stage,
            args.workers,
            args.allow_missing_voices,
        )
    except (text.MissingPackage, voices.MissingSynthesizer, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
