"""Data: lhotse cut manifests or Shar folders (:mod:`asr.manifests`) -> duration-bounded,
length-bucketed batches of padded audio (:class:`SpeechDataModule`); text files -> batches of
sentences (:class:`TextDataModule`).

The sampler (lhotse ``DynamicBucketingSampler``) runs in the main process and hands each
batch's cuts to a DataLoader worker, which reads and resamples the audio there.
"""

import random
import warnings
from collections.abc import Callable
from copy import deepcopy
from itertools import islice
from pathlib import Path

import lightning as L
import numpy as np
import soxr
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler
from lhotse.lazy import LazySlicer
from lightning.pytorch.utilities import rank_zero_info

from asr.audio import SAMPLE_RATE, load_audio
from asr.manifests import SharCuts, is_shar, open_shar, read_cuts
from asr.text import read_text_file


class CutBatches(torch.utils.data.Dataset):
    """Turns a CutSet (one batch, chosen by the sampler) into tensors.

    Returns a dict with ``audio`` (B, S) float32 at 16 kHz zero-padded, ``audio_lens`` (B,)
    sample counts, ``texts`` (B transcripts) and ``ids`` (B cut ids). Cuts whose audio
    cannot be read are dropped from the batch with a warning.

    Each clip is brought to 16 kHz by one soxr resampling that also applies its speed factor
    (a clip at rate r played f times faster is a clip at rate r * f): lhotse's own speed and
    rate transforms resample with torchaudio, which took 10-15x as long for 11,025 Hz clips
    and odd ratios, and the DataLoader workers share the CPU with the network.

    Args:
        speed_perturb: speed factors drawn on the fly, each as likely as the original speed
            (Kaldi's 0.9/1.0/1.1 convention).
        band_limit: sample rates (e.g. 8000, 11025) a clip passes through with probability
            ``band_limit_p``, so it loses what lies above half that rate: wide-band clips then
            look like telephone and 11 kHz recordings too, and the band alone tells the model
            nothing about where a clip came from.
    """

    def __init__(
        self,
        speed_perturb: list[float] | None = None,
        seed: int = 0,
        band_limit: list[int] | None = None,
        band_limit_p: float = 0.0,
    ):
        self.speeds = [1.0, *(speed_perturb or [])]
        self.band_limit = list(band_limit or [])
        self.band_limit_p = band_limit_p
        self.seed = seed

    def _audio(self, cut, rng: random.Random) -> np.ndarray:
        """(S,) samples of ``cut`` at 16 kHz, at a drawn speed, band-limited when drawn."""
        speed = rng.choice(self.speeds)
        samples = load_audio(cut.load_audio(), cut.sampling_rate * speed)
        if self.band_limit and rng.random() < self.band_limit_p:
            rate = rng.choice(self.band_limit)
            narrow = soxr.resample(samples, SAMPLE_RATE, rate)
            samples = soxr.resample(narrow, rate, SAMPLE_RATE)[: len(samples)]
        return samples

    def __getitem__(self, cuts: CutSet) -> dict:
        # Draws seeded by the batch itself: DataLoader workers (each a copy of this object) do
        # not repeat each other's draws, and a batch gets the same ones whichever worker reads
        # it, in a resumed run too.
        rng = random.Random(f"{self.seed}:" + ":".join(cut.id for cut in cuts))
        audio, texts, ids = [], [], []
        for cut in cuts:
            try:
                audio.append(torch.from_numpy(self._audio(cut, rng)))
            except Exception as err:  # a damaged clip must not end the run
                warnings.warn(f"{cut.id}: audio left out of the batch ({err})", stacklevel=2)
                continue
            texts.append(" ".join(s.text or "" for s in cut.supervisions))
            ids.append(cut.id)
        audio_lens = torch.tensor([len(a) for a in audio], dtype=torch.long)
        return {
            "audio": torch.nn.utils.rnn.pad_sequence(audio, batch_first=True),
            "audio_lens": audio_lens,
            "texts": texts,
            "ids": ids,
        }


class ResumableLoader(torch.utils.data.DataLoader):
    """A DataLoader over a lhotse sampler whose place in the epoch goes into checkpoints
    (Lightning saves and restores loaders that have ``state_dict``): a resumed run goes on
    with the batch after the last one trained on, neither repeating nor skipping any.

    ``batches_done`` tells how many batches of the current epoch the model has been trained
    on; the sampler itself runs ahead of that by the batches being prefetched.

    The epoch saved is the one whose batches are being read, taken when the loader starts
    iterating: Lightning counts an epoch that a run's budget ended in the middle of
    (``max_steps``, ``max_time``) as done, and in the resumed run sets the sampler's epoch to
    the next one while the rest of the restored epoch is read; saving that number would make
    the next resume fast-forward through another epoch's order.

    A run resumed on another number of processes (devices x nodes) goes on from the same
    place: lhotse deals the same sequence of batches out to N processes in turn, so the
    batches done so far are counted again in turns of the new N. (With several length
    buckets the processes of an update share a bucket, which makes the sequence depend on
    N: there the rest of the epoch is read in another order, from about the same place.)
    When each process reads a part of the data of its own, each part is 1/N of the epoch:
    the same count goes on from the same place in the new parts.

    ``processes`` is the number of processes of the run. ``agree`` is given when each reads its
    own part (their batch counts then differ by a few): it tells whether every process has
    a batch (:meth:`lightning.pytorch.strategies.Strategy.reduce_boolean_decision`), and the
    epoch ends for all as soon as one process runs out, so that they stay in step.
    """

    def __init__(
        self,
        *args,
        batches_done: Callable[[], int],
        processes: int = 1,
        agree: Callable[[bool], bool] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done
        self.processes, self.agree = processes, agree
        self.epoch = self.sampler.epoch
        # (epoch, batches): what to add to the trainer's count of the epoch's batches to make
        # the sampler's, once a run has gone on with another number of processes in it.
        self.shift = (None, 0)

    def __iter__(self):
        iterator = super().__iter__()  # starts the sampler's epoch, or the restored one
        self.epoch = self.sampler.epoch
        return iterator if self.agree is None else self._in_step(iterator)

    def _in_step(self, batches):
        """The batches while every process has one. Each process asks as often as the others,
        so their other collective operations (the gradients') stay in the same order."""
        for batch in batches:
            if not self.agree(True):
                return
            yield batch
        self.agree(False)

    def state_dict(self) -> dict:
        state = self.sampler.state_dict()
        diagnostics = state["diagnostics"]
        epoch = diagnostics["stats_per_epoch"].get(self.epoch)
        if epoch is not None:  # lhotse fast-forwards over the kept and discarded batches
            shifted, shift = self.shift
            shift = shift if shifted == self.epoch else 0
            epoch["kept_batches"], epoch["discarded_batches"] = self.batches_done() + shift, 0
            state["epoch"] = diagnostics["current_epoch"] = self.epoch
            state["kept_shift"] = shift  # for a run resumed from this one
        state["processes"] = self.processes
        return state

    def load_state_dict(self, state: dict) -> None:
        state = deepcopy(state)
        shift = state.pop("kept_shift", 0)
        before, now = state.pop("processes", state["world_size"]), self.processes
        if before != now:
            epoch = state["diagnostics"]["stats_per_epoch"].get(state["epoch"])
            if epoch is not None:
                done = epoch["kept_batches"]
                epoch["kept_batches"] = done * before // now
                shift += epoch["kept_batches"] - done
            rank_zero_info(f"data: resuming on {now} processes instead of {before}: the epoch goes on")
        self.shift = (state["epoch"], shift)
        state["world_size"] = self.sampler.world_size
        self.sampler.load_state_dict(state)
        self.epoch = self.sampler.epoch


def set_names(manifests: list[str]) -> list[str]:
    """Short names of manifests for logs: ``data/uqm/cuts_dev_human.jsonl.gz`` -> ``dev_human``,
    with the folder in front (``uqm_dev``) when two manifests would share a name."""
    stems = [Path(m).name.removesuffix(".gz").removesuffix(".jsonl").removeprefix("cuts_") for m in manifests]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{Path(m).parent.name}_{stem}" for m, stem in zip(manifests, stems, strict=True)]


# A Shar cut holds its encoded audio in memory from the moment it is read until its batch is
# drawn, and the bucketing sampler keeps ``buffer_size`` cuts waiting in its buckets. lhotse's
# default of 20,000 cuts of 5 s at 16 kHz, as FLAC (62 % of 16-bit PCM on the smoke clips:
# 100 kB each), would hold 2 GB in each training process (each rank under DDP), 4.8 GB for
# LibriSpeech's 12 s clips. 2,000 hold a tenth of that and still give each of 10 buckets 200
# cuts: five batches of 40 five-second cuts at the default max_duration of 200 s. A manifest's
# cuts hold no audio (~1 kB each in memory: 20 MB for 20,000) and keep lhotse's default.
SHAR_BUFFER_SIZE = 2000


class BucketingSampler(DynamicBucketingSampler):
    """lhotse's ``DynamicBucketingSampler`` that hands its epoch to the Shar folders it reads
    (``shars``), so their shard order follows the sampler's epoch: another order each epoch,
    and the same order again when a resumed run replays its epoch.

    lhotse restores a sampler by drawing the batches of the interrupted epoch again from its
    start (``_fast_forward``, which calls ``set_epoch``). Its Shar reader counts epochs by its
    own full passes, which a new process starts again from 0: without this, a resumed run
    would replay epoch 0's shard order and go on with the wrong batches, silently.
    """

    def __init__(self, *cuts, shars: list[SharCuts], **kwargs):
        self.shars = shars
        super().__init__(*cuts, **kwargs)
        # lhotse reads cuts here to place its buckets: a pass that ends counts as an epoch of
        # the reader's, so readers of parts of different sizes (each process's) would disagree.
        self.set_epoch(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for shar in self.shars:
            shar.epoch = epoch


class SpeechDataModule(L.LightningDataModule):
    """Train/validation/test data from lhotse cut manifests or Shar folders.

    Args:
        train_cuts, val_cuts, test_cuts: paths of cut manifests (JSONL, optionally gzipped) or
            of Shar folders (written by ``asr data shard``), or lists of them. Several training
            sets are mixed (see ``train_weights``); several validation or test sets are each
            scored on their own as well as together (``val_wer_<name>``, see :func:`set_names`).
        train_weights: the share of training cuts drawn from each training set (lhotse
            ``CutSet.mux``). An epoch is one pass over the first set; the others are repeated
            as often as their share needs. Default: in proportion to their sizes, each read once
            an epoch.
        predict_cuts: manifest for ``asr predict``; the test manifest when not given.
        max_duration: seconds of audio per batch (before padding).
        num_buckets: length buckets; more buckets, less padding.
        num_workers: DataLoader processes reading audio.
        speed_perturb: speed factors applied on the fly to training audio, e.g. [0.9, 1.1].
        band_limit, band_limit_p: sample rates a training cut is passed through, and how often
            (:class:`CutBatches`).
        seed: shuffling and perturbation seed.

    A Shar folder is read lazily, a shard at a time from start to end
    (:func:`~asr.manifests.open_shar`): for training its shards come in an order drawn from
    ``seed`` and the epoch, and the bucketing sampler shuffles the cuts of the shards it holds
    (:data:`SHAR_BUFFER_SIZE`); validation and test read the shards in order. Each cut's audio
    arrives in memory with it, and the DataLoader workers decode it.

    Under DDP (N processes), training from manifests alone, every process reads the manifests
    (~1 kB a cut) and trains on every N-th batch (the lhotse sampler deals them out; the
    trainer's own distributed sampler is off): the updates are exactly those of one process
    with N batches an update. With a Shar folder among the training sets, each process reads
    shards of its own instead, every N-th of the epoch's shard order (each shard is read once
    an epoch, by one process), and the manifests beside it are dealt out cut by cut (lhotse's
    ``LazySlicer``); each process batches its own part, and the epoch ends for all when the
    first runs out (:class:`ResumableLoader`), leaving at most about a shard's batches on the
    others for another epoch's order. A folder then needs at least N shards. Validation and
    test read every shard and manifest in every process and score each process's batches.

    A run resumed mid-epoch goes on with the next batch with Shar folders too: lhotse replays
    the epoch up to there, reading those shards again (no decoding), in the same order
    (:class:`BucketingSampler`).
    """

    def __init__(
        self,
        train_cuts: str | list[str] | None = None,
        val_cuts: str | list[str] | None = None,
        test_cuts: str | list[str] | None = None,
        predict_cuts: str | None = None,
        train_weights: list[float] | None = None,
        max_duration: float = 200.0,
        num_buckets: int = 10,
        num_workers: int = 2,
        speed_perturb: list[float] | None = None,
        band_limit: list[int] | None = None,
        band_limit_p: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        trains = _as_list(train_cuts)
        if train_weights is not None and len(train_weights) != len(trains):
            raise ValueError(
                f"data.train_weights has {len(train_weights)} weights for {len(trains)} training manifests"
            )

    def names(self, stage: str) -> list[str]:
        """The names of the ``stage`` ("val" or "test") manifests, as the metrics call them."""
        return set_names(_as_list(self.hparams[f"{stage}_cuts"]))

    def _open(self, path, train: bool = False, part: tuple[int, int] = (0, 1)) -> CutSet:
        """The cuts of a manifest or Shar folder; of them, this process's ``part`` (rank,
        processes) only: its own shards, or every processes-th cut of a manifest."""
        if is_shar(path):
            return open_shar(path, shuffle=train, seed=self.hparams.seed, part=part)
        cuts = read_cuts(path)
        rank, processes = part
        return cuts if processes == 1 else CutSet(LazySlicer(cuts, k=rank, n=processes))

    def _part(self, paths: list[str]) -> tuple[int, int]:
        """(rank, processes) of the training data this process reads: all of it (0, 1), unless
        a distributed run trains from a Shar folder (see the class's notes)."""
        trainer = self.trainer
        if trainer is None or trainer.world_size == 1 or not any(is_shar(p) for p in paths):
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _mixed(self, sets: list[CutSet]) -> CutSet:
        """The training sets as one stream of cuts."""
        hp = self.hparams
        if len(sets) == 1:
            return sets[0]
        if hp.train_weights is None:  # drawn in proportion to their sizes: each read once an epoch
            # A Shar folder is counted from its cuts files alone, without reading its audio (a
            # process reading its own shards has about 1/processes of them).
            sizes = [
                len(c) / c.data.processes if isinstance(c.data, SharCuts) else sum(1 for _ in c) for c in sets
            ]
            return CutSet.mux(*sets, weights=sizes, seed=hp.seed)
        first, *rest = sets
        # stop_early: the epoch ends with the first manifest, the only one that is not repeated.
        return CutSet.mux(
            first, *(c.repeat() for c in rest), weights=hp.train_weights, stop_early=True, seed=hp.seed
        )

    def _loader(self, cuts: CutSet, shars: list[SharCuts], train: bool = False, own_part: bool = False):
        """Batches of ``cuts``; with ``own_part``, the cuts are this process's own part of the
        training data, and its sampler does not deal batches out to other processes."""
        hp = self.hparams
        alone = {"world_size": 1, "rank": 0} if own_part else {}
        # Bucketing needs at least as many cuts as buckets; a tiny manifest gets fewer buckets.
        buckets = sum(1 for _ in islice(cuts, hp.num_buckets))
        if buckets > 1:
            buffer = {"buffer_size": SHAR_BUFFER_SIZE} if shars else {}
            sampler = BucketingSampler(
                cuts, max_duration=hp.max_duration, num_buckets=buckets, shuffle=train, seed=hp.seed,
                shars=shars, **buffer, **alone,
            )  # fmt: skip
        else:
            sampler = DynamicCutSampler(
                cuts, max_duration=hp.max_duration, shuffle=train, seed=hp.seed, **alone
            )
        loader = {
            "sampler": sampler,
            "batch_size": None,  # the sampler yields whole batches
            "num_workers": hp.num_workers,
            "persistent_workers": hp.num_workers > 0,
        }
        if not train:
            return torch.utils.data.DataLoader(CutBatches(seed=hp.seed), **loader)
        dataset = CutBatches(hp.speed_perturb, hp.seed, hp.band_limit, hp.band_limit_p)
        trainer = self.trainer
        agree = (lambda has: trainer.strategy.reduce_boolean_decision(has, all=True)) if own_part else None
        processes = trainer.world_size if trainer else 1
        return ResumableLoader(
            dataset, **loader, batches_done=self._batches_done, processes=processes, agree=agree
        )

    def _batches_done(self) -> int:
        """Training batches of the current epoch the model has been updated with (0 outside a
        trainer); "processed", not "completed": a checkpoint saved in on_train_batch_end
        holds the update of a batch not yet counted as completed."""
        trainer = self.trainer
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed if trainer else 0

    def _manifests(self, stage: str) -> list[str]:
        manifests = _as_list(self.hparams[f"{stage}_cuts"])
        if not manifests:
            raise ValueError(f"no manifest for {stage}: set data.{stage}_cuts in the config")
        return manifests

    def train_dataloader(self):
        paths = self._manifests("train")
        part = self._part(paths)
        sets = [self._open(path, train=True, part=part) for path in paths]
        return self._loader(self._mixed(sets), _shars(sets), train=True, own_part=part[1] > 1)

    def _eval_loader(self, path) -> torch.utils.data.DataLoader:
        cuts = self._open(path)
        return self._loader(cuts, _shars([cuts]))

    def val_dataloader(self):
        loaders = [self._eval_loader(m) for m in self._manifests("val")]
        return loaders[0] if len(loaders) == 1 else loaders

    def test_dataloader(self):
        loaders = [self._eval_loader(m) for m in self._manifests("test")]
        return loaders[0] if len(loaders) == 1 else loaders

    def predict_dataloader(self):
        return self._eval_loader(self.hparams.predict_cuts or self._manifests("test")[0])


def _shars(sets: list[CutSet]) -> list[SharCuts]:
    return [cuts.data for cuts in sets if isinstance(cuts.data, SharCuts)]


def _as_list(manifests: str | list[str] | None) -> list[str]:
    if manifests is None:
        return []
    return [manifests] if isinstance(manifests, str | Path) else list(manifests)


class SentenceBatches(torch.utils.data.Sampler):
    """Sentence indices in batches of at most ``batch_size`` sentences and ``max_chars``
    characters, padding and boundaries included; a longer sentence makes a batch of its own.

    Sentences are sorted by length within random pools of 100 batches, so a batch wastes little
    on padding while the order of batches stays random.
    """

    def __init__(self, lengths: list[int], batch_size: int, max_chars: int, shuffle: bool, seed: int = 0):
        self.lengths, self.batch_size, self.max_chars = lengths, batch_size, max_chars
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch  # Lightning calls this: a new order every epoch

    def _batches(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        batches, pool = [], 100 * self.batch_size
        for start in range(0, len(order), pool):
            batch = []
            for i in sorted(order[start : start + pool], key=self.lengths.__getitem__):
                width = self.lengths[i] + 1  # the longest so far: sorted ascending
                if batch and (len(batch) == self.batch_size or width * (len(batch) + 1) > self.max_chars):
                    batches.append(batch)
                    batch = []
                batch.append(i)
            batches.append(batch)
        if self.shuffle:
            rng.shuffle(batches)
        return [b for b in batches if b]

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())


class TextDataModule(L.LightningDataModule):
    """Batches of sentences (lists of strings) from text files, one sentence per line.

    Args:
        train_text, val_text, test_text: UTF-8 text files; blank lines are skipped, and the
            model normalises each line (:func:`~asr.text.normalize_text`).
        batch_size: sentences per batch, at most.
        max_chars: characters per batch, at most (padding included): bounds memory.
        num_workers: DataLoader processes; reading a list of strings needs none.
        seed: shuffling seed.
    """

    def __init__(
        self,
        train_text: str | None = None,
        val_text: str | None = None,
        test_text: str | None = None,
        batch_size: int = 64,
        max_chars: int = 16384,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()

    def _loader(self, path: str | None, stage: str, train: bool = False) -> torch.utils.data.DataLoader:
        if path is None:
            raise ValueError(f"no text for {stage}: set data.{stage}_text in the config")
        hp = self.hparams
        sentences = [line.strip() for line in read_text_file(path) if line.strip()]
        lengths = [len(s) for s in sentences]
        batches = SentenceBatches(lengths, hp.batch_size, hp.max_chars, shuffle=train, seed=hp.seed)
        return torch.utils.data.DataLoader(
            sentences,
            batch_sampler=batches,
            collate_fn=list,  # the model tokenizes: one alphabet, stated once, in the model config
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self):
        return self._loader(self.hparams.train_text, "train", train=True)

    def val_dataloader(self):
        return self._loader(self.hparams.val_text, "val")

    def test_dataloader(self):
        return self._loader(self.hparams.test_text, "test")
