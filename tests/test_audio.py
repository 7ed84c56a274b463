"""asr.audio.load_audio: files and arrays in, mono float32 at 16 kHz out; bad inputs raise AudioError."""

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.audio import SAMPLE_RATE, AudioError, load_audio

PCM16_STEP = 1 / 2**15  # quantisation step of 16-bit PCM


def sine(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def expected_length(num_samples: int, rate: int) -> float:
    return num_samples * SAMPLE_RATE / rate


# Files


def test_16k_mono_wav_loads_unchanged(tmp_path):
    path = tmp_path / "clip.wav"
    original = sine(440, SAMPLE_RATE)
    sf.write(path, original, SAMPLE_RATE)

    samples = load_audio(path)

    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) == len(original)
    np.testing.assert_allclose(samples, original, atol=PCM16_STEP)


def test_path_may_be_a_string(tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, sine(440, SAMPLE_RATE), SAMPLE_RATE)
    np.testing.assert_array_equal(load_audio(str(path)), load_audio(path))


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_file_is_resampled_to_16k_with_the_right_length(tmp_path, rate):
    path = tmp_path / f"clip_{rate}.wav"
    original = sine(1000, rate, seconds=1.5)
    sf.write(path, original, rate)

    samples = load_audio(path)

    assert samples.dtype == np.float32
    assert len(samples) == pytest.approx(expected_length(len(original), rate), rel=0.01)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_resampling_keeps_the_frequency_of_a_sine(tmp_path, rate):
    path = tmp_path / f"clip_{rate}.wav"
    sf.write(path, sine(1000, rate), rate)

    samples = load_audio(path)

    assert peak_frequency(samples, SAMPLE_RATE) == pytest.approx(1000, abs=2)


def test_stereo_file_is_downmixed_to_the_mean_of_its_channels(tmp_path):
    path = tmp_path / "stereo.wav"
    left, right = sine(440, SAMPLE_RATE), sine(660, SAMPLE_RATE, amplitude=0.25)
    sf.write(path, np.stack([left, right], axis=1), SAMPLE_RATE, subtype="FLOAT")

    samples = load_audio(path)

    assert samples.shape == left.shape
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-6)


def test_24_bit_pcm_wav_loads(tmp_path):
    path = tmp_path / "clip24.wav"
    original = sine(440, SAMPLE_RATE)
    sf.write(path, original, SAMPLE_RATE, subtype="PCM_24")
    assert sf.info(path).subtype == "PCM_24"

    samples = load_audio(path)

    assert samples.dtype == np.float32 and len(samples) == len(original)
    np.testing.assert_allclose(samples, original, atol=1 / 2**23)


def test_flac_file_loads(tmp_path):
    path = tmp_path / "clip.flac"
    original = sine(440, SAMPLE_RATE)
    sf.write(path, original, SAMPLE_RATE, format="FLAC")

    samples = load_audio(path)

    assert len(samples) == len(original)
    np.testing.assert_allclose(samples, original, atol=PCM16_STEP)


def test_ogg_vorbis_file_loads_and_keeps_its_frequency(tmp_path):
    path = tmp_path / "clip.ogg"
    rate = 44100
    original = sine(1000, rate)
    sf.write(path, original, rate, format="OGG", subtype="VORBIS")

    samples = load_audio(path)

    assert samples.dtype == np.float32
    assert len(samples) == pytest.approx(expected_length(len(original), rate), rel=0.01)
    assert peak_frequency(samples, SAMPLE_RATE) == pytest.approx(1000, abs=2)


def test_silent_clip_loads_as_zeros(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)

    samples = load_audio(path)

    assert len(samples) == SAMPLE_RATE
    assert not samples.any()


# Arrays and tensors


def test_numpy_array_at_16k_is_returned_unchanged():
    original = sine(440, SAMPLE_RATE)
    samples = load_audio(original, sample_rate=SAMPLE_RATE)
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples, original)


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_numpy_array_is_resampled_to_16k(rate):
    original = sine(1000, rate)
    samples = load_audio(original, sample_rate=rate)
    assert len(samples) == pytest.approx(expected_length(len(original), rate), rel=0.01)
    assert peak_frequency(samples, SAMPLE_RATE) == pytest.approx(1000, abs=2)


def test_float64_array_comes_back_as_float32():
    samples = load_audio(sine(440, SAMPLE_RATE).astype(np.float64), sample_rate=SAMPLE_RATE)
    assert samples.dtype == np.float32


def test_torch_tensor_is_accepted():
    original = sine(440, SAMPLE_RATE)
    samples = load_audio(torch.from_numpy(original), sample_rate=SAMPLE_RATE)
    assert isinstance(samples, np.ndarray) and samples.dtype == np.float32
    np.testing.assert_array_equal(samples, original)


def test_tensor_that_requires_grad_is_accepted():
    tensor = torch.from_numpy(sine(440, SAMPLE_RATE)).requires_grad_()
    assert len(load_audio(tensor, sample_rate=SAMPLE_RATE)) == SAMPLE_RATE


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(
            lambda left, right: torch.stack([torch.from_numpy(left), torch.from_numpy(right)]),
            id="tensor-(2,S)",
        ),
        pytest.param(lambda left, right: np.stack([left, right]), id="numpy-(2,S)"),
        pytest.param(lambda left, right: np.stack([left, right], axis=1), id="numpy-(S,2)"),
    ],
)
def test_two_channel_array_is_downmixed(layout):
    left, right = sine(440, SAMPLE_RATE), sine(660, SAMPLE_RATE, amplitude=0.25)

    samples = load_audio(layout(left, right), sample_rate=SAMPLE_RATE)

    assert samples.shape == left.shape
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-6)


def test_array_without_sample_rate_raises():
    with pytest.raises(AudioError, match="sample_rate"):
        load_audio(sine(440, SAMPLE_RATE))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_array_with_non_finite_samples_raises(bad_value):
    samples = sine(440, SAMPLE_RATE)
    samples[100] = bad_value
    with pytest.raises(AudioError, match="NaN or infinite"):
        load_audio(samples, sample_rate=SAMPLE_RATE)


def test_empty_array_raises():
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(np.zeros(0, dtype=np.float32), sample_rate=SAMPLE_RATE)


def test_three_dimensional_array_raises():
    with pytest.raises(AudioError, match="dimensions"):
        load_audio(np.zeros((2, 2, 100), dtype=np.float32), sample_rate=SAMPLE_RATE)


def test_integer_array_is_scaled_to_unit_range_or_rejected():
    """int16 samples (e.g. from scipy.io.wavfile) must not come back as values in the thousands."""
    pcm = (sine(440, SAMPLE_RATE) * 2**15).astype(np.int16)
    try:
        samples = load_audio(pcm, sample_rate=SAMPLE_RATE)
    except AudioError:
        return
    assert np.abs(samples).max() <= 1.0


# Bad files: each raises AudioError naming the file and the problem


def _write_nan_wav(path):
    samples = sine(440, SAMPLE_RATE)
    samples[1000] = np.nan
    sf.write(path, samples, SAMPLE_RATE, subtype="FLOAT")


BAD_FILES = {
    "missing": ("missing.wav", lambda path: None, "no such file"),
    "directory": ("folder.wav", lambda path: path.mkdir(), "directory"),
    "empty": ("empty.wav", lambda path: path.touch(), "empty file"),
    "text-as-wav": ("notes.wav", lambda path: path.write_text("not audio\n"), "not a readable audio file"),
    "random-mp3": (
        "noise.mp3",
        lambda path: path.write_bytes(np.random.default_rng(0).bytes(4096)),
        "not a readable audio file",
    ),
    "nan-samples": ("nan.wav", _write_nan_wav, "nan"),
    "zero-frames": (
        "no_frames.wav",
        lambda path: sf.write(path, np.zeros(0, dtype=np.float32), SAMPLE_RATE),
        "no audio samples",
    ),
}


@pytest.mark.parametrize("name, make, problem", list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_bad_file_raises_audio_error_naming_file_and_problem(tmp_path, name, make, problem):
    path = tmp_path / name
    make(path)

    with pytest.raises(AudioError) as error:
        load_audio(path)

    message = str(error.value)
    assert str(path) in message
    assert problem in message.lower()
    assert error.value.source == str(path)


@pytest.mark.parametrize("case", ["text-as-wav", "random-mp3"])
def test_unreadable_existing_file_is_not_reported_as_missing(tmp_path, case):
    name, make, _ = BAD_FILES[case]
    path = tmp_path / name
    make(path)

    with pytest.raises(AudioError) as error:
        load_audio(path)

    assert "does not exist" not in str(error.value)


def test_audio_error_is_a_value_error():
    assert issubclass(AudioError, ValueError)


def test_wav_truncated_in_its_data_loads_the_samples_that_are_left(tmp_path):
    path = tmp_path / "truncated.wav"
    original = sine(440, SAMPLE_RATE)
    sf.write(path, original, SAMPLE_RATE)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    samples = load_audio(path)  # any exception, AudioError included, fails this test

    assert 0 < len(samples) < len(original)
    np.testing.assert_allclose(samples, original[: len(samples)], atol=PCM16_STEP)


@pytest.mark.parametrize("keep_bytes", [1, 10, 30, 44])
def test_wav_truncated_in_its_header_raises_audio_error(tmp_path, keep_bytes):
    path = tmp_path / "truncated.wav"
    sf.write(path, sine(440, SAMPLE_RATE), SAMPLE_RATE)
    path.write_bytes(path.read_bytes()[:keep_bytes])

    with pytest.raises(AudioError, match=str(path)):
        load_audio(path)


def test_truncated_flac_loads_or_raises_audio_error(tmp_path):
    path = tmp_path / "truncated.flac"
    original = sine(440, SAMPLE_RATE)
    sf.write(path, original, SAMPLE_RATE, format="FLAC")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])

    try:
        samples = load_audio(path)
    except AudioError as error:
        assert str(path) in str(error)
    else:
        assert len(samples) < len(original)
