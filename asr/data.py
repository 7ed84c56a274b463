"""Data: lhotse cut manifests -> duration-bounded, length-bucketed batches of padded audio.

The sampler (lhotse ``DynamicBucketingSampler``) runs in the main process and hands each
batch's cuts to a DataLoader worker, which reads and resamples the audio there.
"""

import random
from itertools import islice
from pathlib import Path

import lightning as L
import torch
from lhotse import CutSet, load_manifest_lazy
from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler
from lhotse.dataset.collation import collate_audio
from lhotse.dataset.cut_transforms import PerturbSpeed

from asr.audio import SAMPLE_RATE


class CutBatches(torch.utils.data.Dataset):
    """Turns a CutSet (one batch, chosen by the sampler) into tensors.

    Returns a dict with ``audio`` (B, S) float32 at 16 kHz zero-padded, ``audio_lens`` (B,)
    sample counts, ``texts`` (B transcripts) and ``ids`` (B cut ids). Cuts whose audio
    cannot be read are dropped from the batch with a warning (lhotse's fault tolerance).
    """

    def __init__(self, speed_perturb: list[float] | None = None, seed: int = 0):
        factors = list(speed_perturb or [])
        # Each factor as likely as the original speed (Kaldi's 0.9/1.0/1.1 convention).
        self.perturb = (
            PerturbSpeed(factors, p=len(factors) / (len(factors) + 1), randgen=random.Random(seed))
            if factors
            else None
        )

    def __getitem__(self, cuts: CutSet) -> dict:
        if self.perturb is not None:
            cuts = self.perturb(cuts)
        cuts = CutSet.from_cuts(
            c if c.sampling_rate == SAMPLE_RATE else c.resample(SAMPLE_RATE) for c in cuts
        )
        audio, audio_lens, cuts = collate_audio(cuts, fault_tolerant=True, mono_downmix=True)
        return {
            "audio": audio,
            "audio_lens": audio_lens,
            "texts": [" ".join(s.text or "" for s in c.supervisions) for c in cuts],
            "ids": [c.id for c in cuts],
        }


def read_cuts(path) -> CutSet:
    """Open a lhotse cut manifest (``.jsonl`` or ``.jsonl.gz``) lazily, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest (run the recipe's prepare stage first)")
    manifest = load_manifest_lazy(path)
    if not isinstance(manifest, CutSet):
        raise ValueError(f"{path}: expected a cut manifest, found a {type(manifest).__name__}")
    return manifest


class SpeechDataModule(L.LightningDataModule):
    """Train/validation/test data from lhotse cut manifests.

    Args:
        train_cuts, val_cuts, test_cuts: paths of cut manifests (JSONL, optionally gzipped).
        predict_cuts: manifest for ``asr predict``; the test manifest when not given.
        max_duration: seconds of audio per batch (before padding).
        num_buckets: length buckets; more buckets, less padding.
        num_workers: DataLoader processes reading audio.
        speed_perturb: speed factors applied on the fly to training audio, e.g. [0.9, 1.1].
        seed: shuffling and perturbation seed.
    """

    def __init__(
        self,
        train_cuts: str | None = None,
        val_cuts: str | None = None,
        test_cuts: str | None = None,
        predict_cuts: str | None = None,
        max_duration: float = 200.0,
        num_buckets: int = 10,
        num_workers: int = 2,
        speed_perturb: list[float] | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()

    def _loader(self, manifest: str | None, stage: str, train: bool = False) -> torch.utils.data.DataLoader:
        if manifest is None:
            raise ValueError(f"no manifest for {stage}: set data.{stage}_cuts in the config")
        hp = self.hparams
        cuts = read_cuts(manifest)
        # Bucketing needs at least as many cuts as buckets; a tiny manifest gets fewer buckets.
        buckets = sum(1 for _ in islice(cuts, hp.num_buckets))
        if buckets > 1:
            sampler = DynamicBucketingSampler(
                cuts, max_duration=hp.max_duration, num_buckets=buckets, shuffle=train, seed=hp.seed
            )
        else:
            sampler = DynamicCutSampler(cuts, max_duration=hp.max_duration, shuffle=train, seed=hp.seed)
        dataset = CutBatches(hp.speed_perturb if train else None, seed=hp.seed)
        return torch.utils.data.DataLoader(
            dataset,
            sampler=sampler,
            batch_size=None,  # the sampler yields whole batches
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self):
        return self._loader(self.hparams.train_cuts, "train", train=True)

    def val_dataloader(self):
        return self._loader(self.hparams.val_cuts, "val")

    def test_dataloader(self):
        return self._loader(self.hparams.test_cuts, "test")

    def predict_dataloader(self):
        return self._loader(self.hparams.predict_cuts or self.hparams.test_cuts, "predict")
