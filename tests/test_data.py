"""Batches of training audio: rate, speed and band drawn per clip; damaged clips dropped."""

import json
import re

import lightning as L
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


def test_draws_follow_the_batch_not_the_worker_or_what_it_read_before(tmp_path):
    cuts = [clip(tmp_path / f"{i}.wav", 11025) for i in range(12)]
    first, second = CutSet.from_cuts(cuts[:6]), CutSet.from_cuts(cuts[6:])

    def lengths(batches: CutBatches, batch: CutSet) -> list[int]:
        return batches[batch]["audio_lens"].tolist()

    worker_a, worker_b = (CutBatches([0.9, 1.1], band_limit=[8000], band_limit_p=0.5) for _ in range(2))
    # Two workers (copies of one dataset) given different batches draw differently...
    assert lengths(worker_a, first) != lengths(worker_b, second)
    # ... and a batch gets the same draws whichever worker reads it, whatever it read before.
    assert lengths(worker_a, second) == lengths(worker_b, second)


class _SeenIds(L.Callback):
    """Records the cut ids of every training batch; saves a checkpoint after ``save_after``
    batches, as a run interrupted there would have left."""

    def __init__(self, checkpoint=None, save_after: int = 0):
        self.ids, self.checkpoint, self.save_after = [], checkpoint, save_after

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ids.append(batch["ids"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.checkpoint and len(self.ids) == self.save_after:
            trainer.save_checkpoint(self.checkpoint)


def test_a_resumed_run_goes_on_with_the_next_batch_of_its_epoch(corpus, tmp_path):
    from asr.data import SpeechDataModule
    from asr.training import CTCTraining
    from tests.conftest import TINY

    def fit(seen: _SeenIds, ckpt_path=None) -> None:
        trainer = L.Trainer(
            default_root_dir=tmp_path, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, use_distributed_sampler=False, limit_val_batches=0, max_epochs=1,
            callbacks=[seen],
        )  # fmt: skip
        data = SpeechDataModule(corpus["train"], corpus["dev"], max_duration=8, num_workers=0)
        module = CTCTraining(TINY, augment=None, stats_batches=1)
        trainer.fit(module, data, ckpt_path=ckpt_path, weights_only=True)  # ModelConfig is allowed

    whole = _SeenIds(tmp_path / "interrupted.ckpt", save_after=3)
    fit(whole)
    assert len(whole.ids) >= 5
    resumed = _SeenIds()
    fit(resumed, tmp_path / "interrupted.ckpt")
    assert resumed.ids == whole.ids[3:]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not a cut (JSONDecodeError"),
        ('{"id": "r", "sources": [], "sampling_rate": 16000, "num_samples": 1, "duration": 1}',
         "expected a cut, found a Recording"),
        ('{"id": 7, "start": 0, "duration": 1, "channel": 0, "type": "MonoCut"}', "id is not a string: 7"),
        ('{"id": "c", "start": 0, "duration": "long", "channel": 0, "type": "MonoCut"}', "no valid duration"),
    ],
)  # fmt: skip
def test_a_bad_manifest_line_is_named_by_file_and_line(tmp_path, line, problem):
    from asr.data import read_cuts

    good = clip(tmp_path / "a.wav", 16000)
    path = tmp_path / "cuts.jsonl"
    path.write_text(json.dumps(good.to_dict()) + "\n\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"cuts.jsonl, line 3: .*{re.escape(problem)}"):
        list(read_cuts(path))
    path.write_bytes(b"\x1f\x8b truncated gzip")
    with pytest.raises(ValueError, match="cuts.jsonl: not a readable manifest"):
        read_cuts(path)
