"""Realism for synthetic speech: the channel and room effects real recordings have.

Synthesizers speak with perfect microphones in silent rooms, at a handful of vocal tract
sizes. Each training clip gets a random chain, drawn once per clip (so a re-run renders the
same audio) and stored in its manifest:

1. vocal tract length: all frequencies scaled by ``vtl`` (0.85-1.15) by resampling, as a
   shorter or longer vocal tract would; the synthesizer's rate is pre-compensated so the
   tempo stays as planned. This turns each voice into a family of speakers.
2. room: convolution with a simulated room impulse response (lhotse's fast random RIR
   generator; T60 0.1-0.8 s, source 0.2-12 m away), from a seeded bank of rooms.
3. background: white, pink or brown noise, or music (Debian's music-on-hold recordings),
   at an SNR of 5-30 dB.
4. channel: a telephone line (300-3400 Hz band, G.711 mu-law 8-bit quantisation) or a
   low-pass filter at 3.5-7 kHz (cheap microphones, lossy codecs).
5. level: peak gain between -30 and -1 dBFS.

Speed perturbation and SpecAugment are applied on the fly during training instead
(``data.speed_perturb``, ``model.augment``).
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soxr
from scipy import signal

SAMPLE_RATE = 16000
MUSIC_DIR = Path("/usr/share/asterisk/moh")  # asterisk-moh-opsound-wav: CC-BY-SA music
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f**beta


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of each effect (the defaults are the recipe's)."""

    p_vtl: float = 0.8
    vtl: tuple[float, float] = (0.85, 1.15)
    p_room: float = 0.3
    rooms: int = 200  # simulated rooms in the bank
    p_noise: float = 0.5
    p_music: float = 0.3  # share of the noisy clips that get music rather than noise
    snr_db: tuple[float, float] = (5.0, 30.0)
    p_telephone: float = 0.1
    p_lowpass: float = 0.1
    lowpass_hz: tuple[float, float] = (3500.0, 7000.0)
    gain_db: tuple[float, float] = (-30.0, -1.0)


@dataclass(frozen=True)
class Effects:
    """The chain drawn for one clip; the identity by default (clean test clips)."""

    vtl: float = 1.0
    room: int | None = None  # index in the room bank
    noise: str | None = None  # white | pink | brown | music
    snr_db: float | None = None  # with noise
    seed: int = 0  # noise samples and music offset
    channel: str | None = None  # telephone | lowpass
    lowpass_hz: float | None = None  # with the lowpass channel
    gain_db: float | None = None  # peak level; None keeps the level

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def draw(rng: np.random.Generator, config: AugmentConfig) -> Effects:
    """A random effect chain for one training clip."""
    noise = None
    if rng.random() < config.p_noise:
        noise = "music" if rng.random() < config.p_music else str(rng.choice(list(NOISE_COLOURS)))
    channel_draw = rng.random()
    channel = (
        "telephone"
        if channel_draw < config.p_telephone
        else "lowpass"
        if channel_draw < config.p_telephone + config.p_lowpass
        else None
    )
    return Effects(
        vtl=round(float(rng.uniform(*config.vtl)), 3) if rng.random() < config.p_vtl else 1.0,
        room=int(rng.integers(config.rooms)) if rng.random() < config.p_room else None,
        noise=noise,
        snr_db=round(float(rng.uniform(*config.snr_db)), 1) if noise else None,
        seed=int(rng.integers(2**31)),
        channel=channel,
        lowpass_hz=round(float(rng.uniform(*config.lowpass_hz))) if channel == "lowpass" else None,
        gain_db=round(float(rng.uniform(*config.gain_db)), 1),
    )


def make_rooms(count: int, seed: int) -> list[np.ndarray]:
    """``count`` simulated room impulse responses at 16 kHz, reproducible from ``seed``."""
    import torch
    from lhotse.augmentation.utils import FastRandomRIRGenerator

    rooms = []
    for i in range(count):
        generator = FastRandomRIRGenerator(sr=SAMPLE_RATE, room_seed=seed + i, source_seed=seed + i)
        # Its seeds cover numpy's draws only: the image sources' distances come from torch's
        # global generator, and coinciding ones are written by a threaded scatter whose winner
        # varies. Both made fixed here (and restored after), so a room is the same every time.
        deterministic = torch.are_deterministic_algorithms_enabled()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + i)
            torch.use_deterministic_algorithms(True)
            try:
                rir = np.asarray(generator(nsource=1)[0], dtype=np.float32)
            finally:
                torch.use_deterministic_algorithms(deterministic)
        rooms.append(rir / (np.abs(rir).max() + 1e-9))
    return rooms


def load_music(directory: Path = MUSIC_DIR) -> list[np.ndarray]:
    """The music-on-hold tracks at 16 kHz (empty when the package is not installed)."""
    import soundfile as sf

    tracks = []
    for path in sorted(directory.glob("*.wav")) if directory.is_dir() else []:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
        tracks.append(soxr.resample(samples.mean(axis=1), rate, SAMPLE_RATE).astype(np.float32))
    return tracks


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of noise whose power spectrum falls as 1/f**beta."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    return np.fft.irfft(spectrum / freqs ** (NOISE_COLOURS[colour] / 2), n).astype(np.float32)


def _mix(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    speech_power = np.mean(speech**2) + 1e-12
    noise_power = np.mean(noise**2) + 1e-12
    return speech + noise * np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))


def _telephone(x: np.ndarray) -> np.ndarray:
    band = signal.sosfilt(signal.butter(4, [300, 3400], "bandpass", fs=SAMPLE_RATE, output="sos"), x)
    peak = np.abs(band).max() + 1e-9
    mu = 255.0  # G.711 mu-law: compress, quantise to 8 bits, expand
    compressed = np.sign(band / peak) * np.log1p(mu * np.abs(band / peak)) / np.log1p(mu)
    quantised = np.round(compressed * 127) / 127
    return (peak * np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(mu)) / mu).astype(np.float32)


def apply(x: np.ndarray, fx: Effects, rooms: list[np.ndarray], music: list[np.ndarray]) -> np.ndarray:
    """Apply the chain ``fx`` to (S,) float32 speech at 16 kHz."""
    rng = np.random.default_rng(fx.seed)
    if fx.vtl != 1.0:
        x = soxr.resample(x, SAMPLE_RATE * fx.vtl, SAMPLE_RATE).astype(np.float32)
    if fx.room is not None:
        x = signal.fftconvolve(x, rooms[fx.room % len(rooms)])[: len(x)].astype(np.float32)
    if fx.noise == "music" and music:
        track = music[fx.seed % len(music)]
        start = int(rng.integers(max(1, len(track) - len(x))))
        x = _mix(x, np.resize(track[start:], len(x)), fx.snr_db)
    elif fx.noise in NOISE_COLOURS:
        x = _mix(x, coloured_noise(len(x), fx.noise, rng), fx.snr_db)
    if fx.channel == "telephone":
        x = _telephone(x)
    elif fx.channel == "lowpass":
        x = signal.sosfilt(signal.butter(6, fx.lowpass_hz, "lowpass", fs=SAMPLE_RATE, output="sos"), x)
    if fx.gain_db is not None:
        x = x * (10 ** (fx.gain_db / 20) / (np.abs(x).max() + 1e-9))
    return np.clip(x, -1.0, 1.0).astype(np.float32)
