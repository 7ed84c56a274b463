"""Batches of training audio: rate, speed and band drawn per clip; damaged clips dropped."""

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, MonoCut, Recording

from asr.data import CutBatches, set_names


def clip(path, rate: int, seconds: float = 1.0, tone: float = 440.0) -> MonoCut:
    t = np.arange(int(rate * seconds)) / rate
    samples = 0.1 * np.sin(2 * np.pi * tone * t) + 0.1 * np.sin(2 * np.pi * 6500 * t)
    sf.write(path, samples.astype(np.float32), rate)
    recording = Recording.from_file(path, recording_id=path.stem)
    return MonoCut(path.stem, 0.0, recording.duration, 0, recording=recording)


def high_band_share(samples: torch.Tensor) -> float:
    spectrum = np.abs(np.fft.rfft(samples.numpy())) ** 2
    return float(spectrum[int(len(spectrum) * 6000 / 8000) :].sum() / spectrum.sum())


def test_clips_of_any_rate_come_out_at_16_khz(tmp_path):
    cuts = CutSet.from_cuts([clip(tmp_path / "a.wav", 16000), clip(tmp_path / "b.wav", 11025, 2.0)])
    batch = CutBatches()[cuts]
    assert batch["audio"].shape == (2, 32000) and batch["audio_lens"].tolist() == [16000, 32000]
    assert batch["ids"] == ["a", "b"]


def test_speed_factors_change_the_length_and_keep_the_rate(tmp_path):
    cuts = CutSet.from_cuts([clip(tmp_path / "a.wav", 11025)])
    lengths = {int(CutBatches([0.9, 1.1], seed=seed)[cuts]["audio_lens"][0]) for seed in range(20)}
    assert lengths == {16000, round(16000 / 0.9), round(16000 / 1.1)}


def test_band_limiting_removes_the_high_band(tmp_path):
    cuts = CutSet.from_cuts([clip(tmp_path / "a.wav", 16000)])
    wide = CutBatches()[cuts]["audio"][0]
    narrow = CutBatches(band_limit=[11025], band_limit_p=1.0)[cuts]["audio"][0]
    assert len(narrow) == len(wide)
    assert high_band_share(wide) > 0.3 and high_band_share(narrow) < 0.01


def test_a_damaged_clip_is_left_out_of_its_batch_with_a_warning(tmp_path):
    good = clip(tmp_path / "a.wav", 16000)
    bad = clip(tmp_path / "b.wav", 16000)
    (tmp_path / "b.wav").write_bytes(b"RIFF but not audio")
    with pytest.warns(UserWarning, match="b: audio left out"):
        batch = CutBatches()[CutSet.from_cuts([good, bad])]
    assert batch["ids"] == ["a"] and batch["audio"].shape[0] == 1


def test_set_names_are_short_and_distinct():
    assert set_names(["data/synth/cuts_dev.jsonl.gz", "data/uqm/cuts_dev_human.jsonl.gz"]) == [
        "dev",
        "dev_human",
    ]
    assert set_names(["data/a/cuts_dev.jsonl.gz", "data/b/cuts_dev.jsonl"]) == ["a_dev", "b_dev"]
