"""Property tests (hypothesis): any bytes to the audio loader, any Unicode to the text
normaliser and tokenizer, any JSON line to the manifest reader. Each input gets a result
or the project's own one-line error naming the file; nothing else escapes.

`make test` runs a few hundred examples of each; `make fuzz` runs many more (the `slow` tests).
"""

import gzip
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr.audio import SAMPLE_RATE, AudioError, load_audio
from asr.data import read_cuts
from asr.text import DEFAULT_ALPHABET, CharTokenizer, normalize_text

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10000"))
QUICK = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _wav_header_then(body: bytes) -> bytes:
    """A valid 16-bit wav's header followed by arbitrary bytes: reaches the decoder, not
    only the format sniffing."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        sf.write(f.name, np.zeros(8, dtype=np.int16), 16000, subtype="PCM_16")
        return Path(f.name).read_bytes()[:44] + body


audio_bytes = st.one_of(st.binary(max_size=4096), st.binary(max_size=4096).map(_wav_header_then))


def check_audio_bytes(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"clip{suffix}"
        path.write_bytes(data)
        try:
            samples = load_audio(path)
        except AudioError as err:
            assert str(path) in str(err) and "\n" not in str(err)
            return
        assert samples.dtype == np.float32 and samples.ndim == 1 and samples.size > 0
        assert np.isfinite(samples).all()


def check_text(text: str) -> None:
    normal = normalize_text(text)
    assert set(normal) <= set(DEFAULT_ALPHABET)
    assert normal == normal.strip() and "  " not in normal
    assert normalize_text(normal) == normal  # idempotent
    tokenizer = CharTokenizer()
    assert tokenizer.decode(tokenizer.encode(normal)) == normal


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Mostly cut-shaped objects with fields missing or of the wrong type, and any JSON at all.
cut_fields = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "start": json_values,
        "duration": json_values,
        "channel": json_values,
        "type": st.sampled_from(["MonoCut", "MultiCut", "Recording", "nonsense"]) | json_values,
        "supervisions": json_values,
        "recording": json_values,
    },
)
manifest_lines = st.one_of(cut_fields.map(json.dumps), json_values.map(json.dumps), st.text(max_size=40))


def check_manifest_line(line: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cuts.jsonl.gz"
        with gzip.open(path, "wt") as f:
            f.write(line.replace("\n", " ") + "\n")
        try:
            cuts = list(read_cuts(path))
        except ValueError as err:
            assert str(path) in str(err)
            return
        assert all(hasattr(cut, "id") and cut.duration >= 0 for cut in cuts)


@QUICK
@given(data=audio_bytes, suffix=st.sampled_from([".wav", ".flac", ".mp3", ".ogg", ""]))
def test_any_bytes_to_the_audio_loader(data, suffix):
    check_audio_bytes(data, suffix)


@QUICK
@given(text=st.text(max_size=200))
def test_any_unicode_to_the_normaliser_and_tokenizer(text):
    check_text(text)


@QUICK
@given(line=manifest_lines)
def test_any_json_line_to_the_manifest_reader(line):
    check_manifest_line(line)


@pytest.mark.slow
@LONG
@given(data=audio_bytes, suffix=st.sampled_from([".wav", ".flac", ".mp3", ".ogg", ""]))
def test_any_bytes_to_the_audio_loader_long(data, suffix):
    check_audio_bytes(data, suffix)


@pytest.mark.slow
@LONG
@given(text=st.text(max_size=2000))
def test_any_unicode_to_the_normaliser_and_tokenizer_long(text):
    check_text(text)


@pytest.mark.slow
@LONG
@given(line=manifest_lines)
def test_any_json_line_to_the_manifest_reader_long(line):
    check_manifest_line(line)


def test_a_readable_clip_still_loads():  # the properties above hold for real audio too
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.wav"
        sf.write(path, np.full(1600, 0.25, dtype=np.float32), SAMPLE_RATE)
        assert load_audio(path).shape == (1600,)
