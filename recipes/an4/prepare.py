"""AN4: CMU's census database of spoken letters, digits and commands, about 50 minutes, 16 kHz.

    python -m recipes.an4.prepare --corpus-dir /path/to/download --out data/an4 [--dev-fraction 0.1]

reads the unpacked ``an4_sphere.tar.gz``: ``an4/etc/an4_{train,test}.transcription`` and the
NIST SPHERE clips ``an4/wav/{an4_clstk,an4test_clstk}/<speaker>/<id>.sph``. lhotse has no AN4
recipe, and it reads SPHERE only through the external sph2pipe program, so the clips are
decoded with libsndfile and stored once as FLAC under ``--out/audio``. A seeded 10 % of the
training speakers become ``cuts_dev``; ``cuts_test`` is AN4's own test set (other speakers).
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from lhotse import CutSet, SupervisionSegment
from lhotse.cut import Cut

from recipes import common

SPLITS = ("train", "dev", "test")
# AN4's subsets -> (audio folder under wav/, transcription file under etc/)
SUBSETS = {
    "train": ("an4_clstk", "an4_train.transcription"),
    "test": ("an4test_clstk", "an4_test.transcription"),
}
REQUIRED = ("etc/an4_train.transcription", "etc/an4_test.transcription", "wav/an4_clstk", "wav/an4test_clstk")
LAYOUT = (
    "an4/etc/an4_train.transcription, an4/etc/an4_test.transcription and "
    "an4/wav/{an4_clstk,an4test_clstk}/<speaker>/<id>.sph (an4_sphere.tar.gz, unpacked)"
)
# "<s> RUBOUT G M E F THREE NINE </s> (an251-fash-b)": words, then the id <session>-<speaker>-<mic>.
LINE = re.compile(
    r"^(?:<s>)?\s*(?P<text>.*?)\s*(?:</s>)?\s*\((?P<id>[^-()\s]+-(?P<speaker>[^-()\s]+)-[^-()\s]+)\)$"
)


@dataclass(frozen=True)
class Utterance:
    """One line of a transcription file and the clip it belongs to."""

    id: str
    speaker: str
    text: str
    sphere: Path


def read_transcription(root: Path, subset: str, skipped: common.SkipLog) -> list[Utterance]:
    """The utterances of ``subset`` ("train" or "test"); lines of another form go to ``skipped``."""
    folder, name = SUBSETS[subset]
    path = root / "etc" / name
    utterances = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        match = LINE.match(line.strip())
        if match is None:
            if line.strip():
                skipped.add(f"{path}:{number}", "not a '<s> WORDS </s> (id)' line")
            continue
        utt_id, speaker = match["id"], match["speaker"]
        sphere = root / "wav" / folder / speaker / f"{utt_id}.sph"
        utterances.append(Utterance(utt_id, speaker, match["text"], sphere))
    return utterances


def to_flac(utterance: Utterance, audio_dir: Path, skipped: common.SkipLog) -> Path | None:
    """The clip as 16-bit FLAC in ``audio_dir``, decoded once; None (and logged) when unreadable."""
    flac = audio_dir / f"{utterance.id}.flac"
    if flac.is_file():
        return flac
    try:
        samples, rate = sf.read(utterance.sphere, dtype="int16")  # AN4 is 16-bit: lossless as FLAC
    except RuntimeError as error:  # soundfile.LibsndfileError and older versions' RuntimeError
        skipped.add(utterance.sphere, common.unreadable_reason(utterance.sphere, error))
        return None
    common.write_atomically(flac, lambda tmp: sf.write(tmp, samples, rate, format="FLAC", subtype="PCM_16"))
    return flac


def subset_cuts(root: Path, subset: str, audio_dir: Path, skipped: common.SkipLog, jobs: int) -> CutSet:
    """Cuts of one AN4 subset, their audio converted to FLAC in ``audio_dir``, ``jobs`` clips at
    a time (threads: libsndfile decodes and encodes outside Python's lock)."""
    audio_dir.mkdir(parents=True, exist_ok=True)
    recordings, segments = [], []
    utterances = read_transcription(root, subset, skipped)
    with ThreadPoolExecutor(jobs) as pool:
        flacs = list(pool.map(lambda utterance: to_flac(utterance, audio_dir, skipped), utterances))
    for utterance, flac in zip(utterances, flacs, strict=True):
        recording = flac and common.read_recording(flac, utterance.id, skipped)
        if recording is None:
            continue
        recordings.append(recording)
        segments.append(
            SupervisionSegment(
                id=utterance.id,
                recording_id=utterance.id,
                start=0.0,
                duration=recording.duration,
                channel=0,
                text=utterance.text,
                language="English",
                speaker=utterance.speaker,
            )
        )
    return common.make_cuts(recordings, segments)


def speaker_of(cut: Cut) -> str:
    """The speaker code of an AN4 cut ("fash" in an251-fash-b)."""
    return cut.supervisions[0].speaker


def prepare(
    corpus_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    dev_fraction: float = 0.1,
    seed: int = 0,
    num_jobs: int | None = None,
) -> dict[str, Path]:
    """Write the AN4 cut manifests (and FLAC audio, ``num_jobs`` clips converted at a time;
    default: the cores this process may use) to ``out_dir``; return the manifests by split.

    Development speakers are drawn from the training speakers, so, like the test set, they are
    voices the model has not trained on. Does nothing when every manifest exists; clips already
    converted are kept. Unreadable clips are listed in ``out_dir/skipped.txt`` and left out.

    Raises:
        CorpusError: ``corpus_dir`` does not hold the AN4 layout.
    """
    root = common.locate(corpus_dir, REQUIRED, LAYOUT, inside=("an4",))
    out_dir = Path(out_dir).resolve()
    done = common.existing_manifests(out_dir, SPLITS)
    if done:
        return done
    skipped = common.SkipLog()
    jobs = num_jobs or common.available_cores()
    cuts = {s: subset_cuts(root, s, out_dir / "audio" / s, skipped, jobs) for s in SUBSETS}
    splits = common.split_by_key(cuts["train"], speaker_of, {"dev": dev_fraction}, seed, unit="speakers")
    return common.write_splits(out_dir, {**splits, "test": cuts["test"]}, skipped)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; a missing or misplaced corpus exits with status 1 and one line."""
    parser = common.argument_parser("an4", "Convert AN4 to FLAC and write lhotse cut manifests.")
    parser.add_argument("--dev-fraction", type=float, default=0.1, help="share of training speakers for dev")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dev split")
    parser.add_argument(
        "--num-jobs", type=int, help="clips converted at a time (default: the cores this process may use)"
    )
    args = parser.parse_args(argv)
    options = {"dev_fraction": args.dev_fraction, "seed": args.seed, "num_jobs": args.num_jobs}
    common.run(prepare, args.corpus_dir, args.out, **options)


if __name__ == "__main__":
    main()
