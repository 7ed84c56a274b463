"""The bad-input catalogue (README, "Bad input"): every kind of audio file a user may hand
over, through the Python API and through `asr transcribe` at once. Each gets a transcript or a
one-line error naming the file and the problem, and the other files are still transcribed."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from asr.audio import AudioError
from asr.model import load_model

RATE = 16000
OK = None  # a transcript, whatever its words (the model is untrained)


def _tone(seconds: float, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)
    return np.repeat(wave[:, None], channels, axis=1) if channels > 1 else wave


def _write(path, samples, rate=RATE, subtype=None, format=None):
    sf.write(path, samples, rate, subtype=subtype, format=format)


def _huge_header(path):
    _write(path, _tone(0.5), subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 0xFFFFFFF0)  # RIFF size: 4 GB
    data[40:44] = struct.pack("<I", 0xFFFFFFF0)  # data size: 4 GB of samples that are not there
    path.write_bytes(bytes(data))


# name: (file name, how to make it, None when it is transcribed or the error's words)
CATALOGUE = {
    "missing": ("missing.wav", lambda p: None, "no such file"),
    "empty (0 bytes)": ("empty.wav", lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "not audio": ("notes.wav", lambda p: p.write_text("this is not audio\n"), "not a readable audio file"),
    "truncated header": (
        "cut.wav",
        lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt "),
        "not a readable",
    ),
    "zero samples": ("zero.wav", lambda p: _write(p, np.zeros(0)), "contains no audio samples"),
    "NaN samples": (
        "nan.wav",
        lambda p: _write(p, np.full(1600, np.nan), subtype="FLOAT"),
        "NaN or infinite",
    ),
    "Inf samples": (
        "inf.wav",
        lambda p: _write(p, np.full(1600, np.inf), subtype="FLOAT"),
        "NaN or infinite",
    ),
    "a folder": ("folder.wav", lambda p: p.mkdir(), "is a directory"),
    "huge header (claims 4 GB)": ("huge.wav", _huge_header, OK),
    "wrong extension (wav named .mp3)": ("wav.mp3", lambda p: _write(p, _tone(1), format="WAV"), OK),
    "silent": ("silent.wav", lambda p: _write(p, np.zeros(RATE)), OK),
    "clipped": ("clipped.wav", lambda p: _write(p, np.clip(10 * _tone(1), -1, 1)), OK),
    "under 50 ms (10 ms)": ("short.wav", lambda p: _write(p, _tone(0.01)), OK),
    "8 kHz": ("8k.wav", lambda p: _write(p, _tone(1, 8000), 8000), OK),
    "44.1 kHz": ("44k.flac", lambda p: _write(p, _tone(1, 44100), 44100), OK),
    "48 kHz": ("48k.wav", lambda p: _write(p, _tone(1, 48000), 48000), OK),
    "stereo": ("stereo.wav", lambda p: _write(p, _tone(1, channels=2)), OK),
    "6 channels": ("surround.wav", lambda p: _write(p, _tone(1, channels=6)), OK),
    "8-bit unsigned": ("u8.wav", lambda p: _write(p, _tone(1), subtype="PCM_U8"), OK),
    "16-bit": ("s16.wav", lambda p: _write(p, _tone(1), subtype="PCM_16"), OK),
    "24-bit": ("s24.flac", lambda p: _write(p, _tone(1), subtype="PCM_24"), OK),
    "32-bit int": ("s32.wav", lambda p: _write(p, _tone(1), subtype="PCM_32"), OK),
    "32-bit float": ("f32.wav", lambda p: _write(p, _tone(1), subtype="FLOAT"), OK),
    "64-bit float": ("f64.wav", lambda p: _write(p, _tone(1), subtype="DOUBLE"), OK),
    "ogg vorbis": ("clip.ogg", lambda p: _write(p, _tone(1), format="OGG", subtype="VORBIS"), OK),
}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("catalogue")
    files = {}
    for kind, (name, make, expected) in CATALOGUE.items():
        make(folder / name)
        files[kind] = (str(folder / name), expected)
    return files


@pytest.mark.parametrize("kind", list(CATALOGUE))
def test_the_python_api_transcribes_or_names_the_problem(untrained_model_file, catalogue, kind):
    path, expected = catalogue[kind]
    (result,) = load_model(untrained_model_file).transcribe_batch([path], return_exceptions=True)
    if expected is OK:
        assert not isinstance(result, AudioError), result
        assert isinstance(result.text, str) and result.duration > 0
    else:
        assert isinstance(result, AudioError) and str(result).startswith(f"{path}: ")
        assert expected in str(result) and "\n" not in str(result)


def test_the_cli_transcribes_every_good_file_of_the_catalogue_and_names_each_bad_one(
    untrained_model_file, catalogue
):
    paths = [path for path, _ in catalogue.values()]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "asr.cli",
            "transcribe",
            "--model",
            untrained_model_file,
            "--format",
            "jsonl",
            *paths,
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    transcribed = [json.loads(line)["audio"] for line in out.stdout.splitlines()]
    assert transcribed == [path for path, expected in catalogue.values() if expected is OK]
    errors = out.stderr.splitlines()
    bad = [(path, expected) for path, expected in catalogue.values() if expected is not OK]
    assert len(errors) == len(bad)
    for line, (path, expected) in zip(errors, bad, strict=True):
        assert line.startswith(f"asr: error: {path}: ") and expected in line


@pytest.mark.slow
def test_an_hour_long_file_is_transcribed_in_pieces_timed_from_its_start(untrained_model_file, tmp_path):
    path = tmp_path / "hour.flac"
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as f:
        for _ in range(60):  # a minute at a time: the test itself stays small
            f.write(np.concatenate([_tone(50), np.zeros(10 * RATE)]))
    result = load_model(untrained_model_file).transcribe(str(path))
    assert result.duration == 3600.0
    assert all(0 <= w.start <= w.end <= 3600.0 for w in result.words)


def test_manifests_with_empty_or_non_ascii_text_are_scored_and_trained_on(
    untrained_model_file, corpus, tmp_path
):
    from lhotse import CutSet

    from asr.cli import main
    from tests.test_cli import _fit_args

    texts = ["", "Café naïve: Zoq-Fot-Pik, 日本!", "ÅNGSTRÖM 42"]
    cuts = list(CutSet.from_file(corpus["train"]))[:3]
    for cut, text in zip(cuts, texts, strict=True):
        cut.supervisions[0].text = text
    manifest = tmp_path / "cuts_odd.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(manifest)
    out = tmp_path / "eval"
    args = ["evaluate", str(manifest), "--model", untrained_model_file, "--decoder", "greedy"]
    assert main([*args, "--output-dir", str(out)]) == 0
    refs = [json.loads(line)["ref"] for line in next(out.glob("*.hyps.jsonl")).read_text().splitlines()]
    assert refs == ["", "cafe naive zoq fot pik", "angstrom forty two"]
    fit = _fit_args({"train": str(manifest), "dev": str(manifest), "test": str(manifest)}, tmp_path / "run")
    assert main([*fit, "--trainer.fast_dev_run", "1", "--data.max_duration", "30"]) == 0


def test_the_server_answers_every_upload_of_the_catalogue(untrained_model_file, catalogue):
    from fastapi.testclient import TestClient

    from asr.serve import create_app

    # What cannot be uploaded (a missing file, a folder) is left to the client.
    uploads = {kind: entry for kind, entry in catalogue.items() if kind not in ("missing", "a folder")}
    with TestClient(create_app(load_model(untrained_model_file))) as client:
        for kind, (path, expected) in uploads.items():
            name = path.rsplit("/", 1)[1]
            with open(path, "rb") as audio:
                response = client.post("/v1/transcribe?decoder=greedy", files={"file": (name, audio)})
            if expected is OK:
                assert response.status_code == 200 and response.json()["duration"] > 0, (kind, response.text)
            else:
                message = response.json()["error"]["message"]
                expected = expected.replace("empty file", "empty upload")  # no file: the bytes sent
                assert (
                    response.status_code == 400 and message.startswith(f"{name}: ") and expected in message
                ), kind
        assert client.get("/health").json()["status"] == "ok"
