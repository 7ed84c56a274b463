"""The speech synthesizers of the synth recipe, each behind ``render(requests) -> audio``.

- espeak-ng, driven in-process through libespeak-ng (ctypes): ~2.5x faster than one
  process per sentence; 8 English accents x ~100 voice variants.
- festival: one batch process renders many sentences (diphone voices kal and ked, and the
  HTS voice slt).
- flite: one process per sentence (fast voices kal16 and slt; awb and rms are held out).

Every engine takes the same ``Voice`` parameters: ``rate`` (1.0 = the voice's own speed;
1.2 = 20 % slower speech) and ``pitch`` (1.0 = the voice's own f0; 0.8 = 20 % lower).
"""

import ctypes
import ctypes.util
import functools
import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

# "en" is espeak-ng's British English: "en-gb" is not a voice name it knows, and a variant
# after it would be silently ignored.
ESPEAK_ACCENTS = (
    "en-us",
    "en",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
ESPEAK_VARIANT_DIR = Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data/voices/!v")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
FLITE_VOICES = ("kal16", "slt")
HELD_OUT_VOICES = ("awb", "rms")  # flite voices whose speakers appear in no other voice: test only
PACKAGES = {
    "espeak": "espeak-ng",
    "festival": "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
    "flite": "flite",
}


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak | festival | flite
    name: str  # engine voice: "en-gb-scotland+m3", "kal_diphone", "slt", ...
    rate: float = 1.0  # duration factor: 1.2 speaks 20 % slower
    pitch: float = 1.0  # f0 factor

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.name}"


class MissingSynthesizer(RuntimeError):
    """A synthesizer is not installed; the message says which Debian packages to install."""


def _missing(engine: str, what: str) -> MissingSynthesizer:
    return MissingSynthesizer(
        f"{what} not found: run `sudo apt-get install {PACKAGES[engine]}` (or `make setup`)"
    )


def espeak_variants() -> list[str]:
    """espeak-ng voice variants (m1, f3, klatt, ...), read from its data folder."""
    if not ESPEAK_VARIANT_DIR.is_dir():
        raise _missing("espeak", str(ESPEAK_VARIANT_DIR))
    return sorted(p.name for p in ESPEAK_VARIANT_DIR.iterdir() if " " not in p.name)


class _Espeak:
    """libespeak-ng in this process: synchronous synthesis into a Python buffer."""

    RATE, PITCH = 1, 3  # espeak_PARAMETER values
    CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self):
        name = ctypes.util.find_library("espeak-ng")
        if name is None:
            raise _missing("espeak", "libespeak-ng")
        self.lib = ctypes.CDLL(name)
        self.sample_rate = self.lib.espeak_Initialize(2, 0, None, 0)  # 2: AUDIO_OUTPUT_SYNCHRONOUS
        if self.sample_rate <= 0:
            raise _missing("espeak", "espeak-ng data")
        self.chunks: list[np.ndarray] = []
        self._callback = self.CALLBACK(self._collect)  # kept referenced: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, count: int, events) -> int:
        if count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # continue synthesis

    def __call__(self, text: str, voice: Voice) -> tuple[np.ndarray, int]:
        if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice.name!r}")
        self.lib.espeak_SetParameter(self.RATE, int(175 / voice.rate), 0)  # words per minute
        self.lib.espeak_SetParameter(self.PITCH, int(np.clip(50 * voice.pitch, 0, 99)), 0)
        self.chunks = []
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None)  # POS_CHARACTER, CHARS_UTF8
        self.lib.espeak_Synchronize()
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return samples.astype(np.float32) / 32768, self.sample_rate


@functools.cache
def _espeak() -> _Espeak:
    return _Espeak()  # one per process: libespeak-ng keeps global state


def _festival_script(requests: list[tuple[str, Voice]], folder: Path) -> str:
    """One festival program that renders every request to ``folder/<i>.wav``."""
    lines = [f"(voice_{requests[0][1].name})"]
    for i, (text, voice) in enumerate(requests):
        if voice.name.endswith("_hts"):
            # The HTS voice ignores Duration_Stretch and the f0 model; its engine takes a
            # speed rate ("-r"). It has no working pitch control: its pitch varies only
            # through the vocal tract perturbation of the augmentation stage.
            lines.append(
                f"(set! hts_engine_params (append {voice.name}::hts_engine_params "
                f'\'(("-r" {1 / voice.rate:.3f}))))'
            )
        else:
            # Diphone voices take their f0 from a linear model: move its target mean.
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {105 * voice.pitch:.0f}) (target_f0_std 14)"
                " (model_f0_mean 170) (model_f0_std 34)))"
            )
            lines.append(f"(Parameter.set 'Duration_Stretch {voice.rate:.3f})")
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{escaped}")) "{folder}/{i}.wav" \'riff)')
    return "\n".join(lines) + "\n"


def _festival(requests: list[tuple[str, Voice]]) -> list[tuple[np.ndarray, int]]:
    if shutil.which("festival") is None:
        raise _missing("festival", "festival")
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "render.scm"
        script.write_text(_festival_script(requests, Path(tmp)))
        result = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, check=False)
        outputs = [Path(tmp) / f"{i}.wav" for i in range(len(requests))]
        if not all(p.exists() for p in outputs):
            raise RuntimeError(f"festival {requests[0][1].name} failed: {result.stderr.strip()[-300:]}")
        return [sf.read(p, dtype="float32") for p in outputs]


def _flite(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    if shutil.which("flite") is None:
        raise _missing("flite", "flite")
    command = [
        "flite",
        "-voice",
        voice.name,
        "-o",
        "/dev/stdout",
        "--setf",
        f"duration_stretch={voice.rate:.3f}",
    ]
    # flite's own f0 targets: kal16 speaks at ~105 Hz mean, slt at ~160, awb ~ 110, rms ~ 100.
    command += ["--setf", f"int_f0_target_mean={_FLITE_F0.get(voice.name, 110) * voice.pitch:.0f}"]
    result = subprocess.run([*command, "-t", text], capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(
            f"flite -voice {voice.name} failed: {result.stderr.decode(errors='replace')[-300:]}"
        )
    return sf.read(io.BytesIO(result.stdout), dtype="float32")


_FLITE_F0 = {"kal16": 105, "slt": 160, "awb": 110, "rms": 100}


def batch_key(voice: Voice) -> tuple[str, str]:
    """Requests with equal keys can be rendered together: festival loads one voice per process."""
    return (voice.engine, voice.name if voice.engine == "festival" else "")


def render(requests: list[tuple[str, Voice]]) -> list[tuple[np.ndarray, int]]:
    """Speak each (text, voice): [(samples (S,) float32, sample rate)].

    All requests must share one :func:`batch_key` (their rate and pitch may differ).
    """
    if len({batch_key(v) for _, v in requests}) > 1:
        raise ValueError("render() takes requests of one engine (and one festival voice)")
    engine = requests[0][1].engine if requests else "espeak"
    if engine == "espeak":
        return [_espeak()(text, voice) for text, voice in requests]
    if engine == "festival":
        return _festival(requests)
    if engine == "flite":
        return [_flite(text, voice) for text, voice in requests]
    raise ValueError(f"unknown engine {engine!r}")
