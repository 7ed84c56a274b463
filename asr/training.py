"""The LightningModules: :class:`CTCTraining` trains a :class:`~asr.model.RecurrentCTC` with CTC
loss, :class:`CharLMTraining` a :class:`~asr.charlm.CharLM` with cross-entropy.

The network, optimizer and LR schedule are injected (LightningCLI fills them from YAML);
this file only says how one step is computed and measured.
"""

import math
import time
from collections.abc import Callable
from itertools import islice

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, Timer
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.text import CharErrorRate, WordErrorRate

from asr.audio import SAMPLE_RATE
from asr.charlm import IGNORE, CharLM, CharLMConfig
from asr.checkpoints import initial_weights
from asr.decoding import greedy_decode
from asr.features import NO_AUGMENT, Augment
from asr.files import write_atomically
from asr.model import ModelConfig, RecurrentCTC
from asr.text import normalize_text


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their path, flushed and renamed over it
    (:func:`asr.files.write_atomically`): a run killed while saving leaves the previous
    ``last.ckpt``, never half of one. Lightning's own writer stages a local file in the
    temporary folder and copies it over the target, which is not atomic when the two are on
    different file systems, and leaves the staged copy behind when killed. Remote paths
    (``s3://...``) keep Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        write_atomically(path, lambda partial: torch.save(checkpoint, partial))


class TopCheckpoints(ModelCheckpoint):
    """The ``save_top_k`` best checkpoints of a run, ``top-step=N.ckpt`` beside ``best.ckpt``,
    for ``asr average`` (the mean of a run's few best networks usually scores a little better
    than the best alone). A class of its own: Lightning keeps each checkpoint callback's state
    under its class and settings, which would otherwise be those of ``best.ckpt``'s."""


class RandomState(L.Callback):
    """Keeps torch's random generators' state in every checkpoint and restores it on resume,
    so that dropout, SpecAugment, VTLP and dither draw after an interruption as they would
    have without it (data order and speed perturbation follow the sampler's own state).

    The state is set again just before the first batch after the resume: a checkpoint is
    saved after a batch, and what runs in between on resume (a new data loader iterator
    draws its seed) would otherwise shift every later draw.
    """

    def __init__(self):
        self.resumed: dict | None = None

    def state_dict(self) -> dict:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state_dict: dict) -> None:
        self.resumed = state_dict

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.resumed is None:
            return
        state, self.resumed = self.resumed, None
        torch.set_rng_state(state["cpu"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


class AudioThroughput(L.Callback):
    """Logs how fast training goes through audio, every ``trainer.log_every_n_steps`` batches:
    ``train_audio_rate``, seconds of audio per second of wall time in this process (data
    loading and the update included, validation left out), and ``train_audio_rate_total``,
    summed over the processes of a distributed run. Hours of audio in an epoch divided by the
    total is the epoch's duration, which is what sizes a cluster; Lightning's ThroughputMonitor
    counts samples and tokens, which do not tell audio time when utterances differ in length.
    """

    def __init__(self):
        self.start: float | None = None
        self.audio = 0.0
        self.batches = 0

    def _restart(self, *_) -> None:
        self.start = None

    on_train_epoch_start = on_validation_end = _restart

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None:
            self.start, self.audio, self.batches = time.perf_counter(), 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.audio += float(batch["audio_lens"].sum()) / SAMPLE_RATE
        self.batches += 1
        # Every process counts the same batches, so all of them take part in the sum together.
        if self.batches < trainer.log_every_n_steps:
            return
        rate = torch.tensor(self.audio / (time.perf_counter() - self.start), device=pl_module.device)
        pl_module.log("train_audio_rate", rate)
        pl_module.log("train_audio_rate_total", trainer.strategy.reduce(rate, reduce_op="sum"))
        self.start = None


class WarmupLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up to the optimizer's LR, then inverse-square-root or cosine decay.

    ``decay="inverse_sqrt"`` needs no budget (a duration-bucketed sampler cannot know its step
    count in advance). ``decay="cosine"`` follows a half cosine from the peak down to
    ``final_factor`` times the peak at the end of the run's budget and stays there: the
    budget is ``trainer.max_steps`` or ``trainer.max_time``, whichever runs out first, as the
    trainer stops (the training modules hand it over through :meth:`set_budget`). A time
    budget makes the decay end with the run on a slow machine as on a fast one, where a
    fixed step count would leave a slow run stopped at a high LR.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 500,
        decay: str = "inverse_sqrt",
        final_factor: float = 0.02,
    ):
        if decay not in ("inverse_sqrt", "cosine"):
            raise ValueError(f"decay must be 'inverse_sqrt' or 'cosine', got {decay!r}")
        self.warmup_steps = max(1, warmup_steps)
        self.decay = decay
        self.final_factor = final_factor
        self.total_steps: int | None = None
        self.time_spent: Callable[[], float] | None = None
        super().__init__(optimizer, self._factor)

    def set_budget(self, steps: int | None = None, time_spent: Callable[[], float] | None = None) -> None:
        """The run's budget: ``steps`` updates and/or ``time_spent()``, the fraction of its time
        used so far (0 at the start, 1 when it is over)."""
        if self.decay == "cosine" and steps is None and time_spent is None:
            raise ValueError("cosine decay needs a budget: set trainer.max_steps or trainer.max_time")
        self.total_steps, self.time_spent = steps, time_spent

    def _factor(self, step: int) -> float:
        step = max(step, 1)
        if step < self.warmup_steps:
            return step / self.warmup_steps
        if self.decay == "inverse_sqrt":
            return math.sqrt(self.warmup_steps / step)
        done = 0.0
        if self.total_steps is not None:
            done = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        if self.time_spent is not None:
            done = max(done, self.time_spent())
        done = min(1.0, done)
        return self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * done))

    def state_dict(self) -> dict:
        # The budget is the trainer's, set anew when a run resumes (its clock is restored with
        # the trainer's Timer), so a resumed run may change it.
        return {k: v for k, v in super().state_dict().items() if k not in ("total_steps", "time_spent")}


def configure_schedule(module: L.LightningModule, optimizer, scheduler):
    """Lightning's optimizer config for ``scheduler`` (None: a constant LR), stepped every
    update; a :class:`WarmupLR` gets the trainer's budget (max_steps, max_time)."""
    if scheduler is None:
        return optimizer
    if isinstance(scheduler, WarmupLR):
        trainer = module.trainer
        # Lightning adds a Timer callback when trainer.max_time is set; it counts across resumes.
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        time_spent = None
        if timer is not None and timer.time_remaining() is not None:
            duration = timer.time_elapsed() + timer.time_remaining()
            time_spent = lambda: timer.time_elapsed() / duration  # noqa: E731
        scheduler.set_budget(trainer.max_steps if trainer.max_steps > 0 else None, time_spent)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class CTCTraining(L.LightningModule):
    """Trains the network on batches from :class:`~asr.data.SpeechDataModule`.

    Args:
        net: the network's configuration (``model.net.*`` in YAML).
        optimizer: builds the optimizer from the parameters (AdamW: lr 1e-3, weight decay 1e-2).
        lr_scheduler: builds the per-step schedule (500 warm-up steps by default).
        augment: SpecAugment and VTLP settings for training features
            (:class:`~asr.features.Augment`); null turns both off.
        stats_batches: training batches used to compute feature normalisation statistics (per
            process in a distributed run: N processes read N times as many).
        init_from: a model file (``asr export``) or training checkpoint whose weights and
            feature statistics start this run (fine-tuning); its network must be the one
            ``net`` describes (dropout aside). A resumed run takes its weights from the
            checkpoint it resumes instead.
        max_skipped: the largest share of a training batch whose CTC loss may be left out
            (a text longer than its audio can carry, or a loss that is not finite) before
            training stops with an error naming them; fewer are counted (``train_skipped``).
    """

    def __init__(
        self,
        net: ModelConfig | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable = WarmupLR,
        augment: Augment | None = Augment(),  # noqa: B008 (frozen: a shared default is safe)
        stats_batches: int = 50,
        init_from: str | None = None,
        max_skipped: float = 0.25,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.net = RecurrentCTC(net or ModelConfig())
        if init_from is not None:
            self.net.load_state_dict(initial_weights(init_from, self.net.config))
        self.net.frontend.augment = augment or NO_AUGMENT
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        # Per utterance, so that the ones CTC cannot align are counted, not silently zeroed.
        self.ctc = nn.CTCLoss(blank=self.net.tokenizer.blank_id, reduction="none", zero_infinity=True)
        # Over all validation (test) sets together; logged at the end of each epoch.
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{name}": metric()
                for split in ("val", "test")
                for name, metric in (("wer", WordErrorRate), ("cer", CharErrorRate), ("loss", MeanMetric))
            }
        )
        # Per set, when there are several (named by the data module): made in setup().
        self.set_names: dict[str, list[str]] = {}
        self.set_metrics = nn.ModuleDict()

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        for split in ("val", "test"):
            names = datamodule.names(split) if hasattr(datamodule, "names") else []
            self.set_names[split] = names if len(names) > 1 else []
            for name in self.set_names[split]:
                for metric, build in (("wer", WordErrorRate), ("cer", CharErrorRate)):
                    key = f"{split}_{metric}_{name}"
                    if key not in self.set_metrics:
                        self.set_metrics[key] = build().to(self.device)

    def on_fit_start(self) -> None:
        # Normalisation statistics come from the training data, once; a resumed run has them.
        # Each process of a distributed run reads stats_batches batches of its own share, and
        # all of them are pooled: every process gets the same statistics.
        if self.net.frontend.has_stats:
            return
        loader = self.trainer.datamodule.train_dataloader()
        batches = islice(loader, self.hparams.stats_batches)
        strategy = self.trainer.strategy
        self.net.frontend.fit_stats(
            ((b["audio"], b["audio_lens"]) for b in batches),
            total_over=lambda sums: strategy.reduce(sums, reduce_op="sum"),
        )
        mean, std = self.net.frontend.mean, self.net.frontend.std
        self.print(
            f"feature statistics: mean {mean.mean():.2f}, std {std.mean():.2f}, "
            f"from {int(self.net.frontend.frames_seen)} frames"
        )

    def _loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch's CTC loss (the mean over its utterances of each one's loss per target
        token, as ``reduction="mean"``), log-probabilities, output lengths, and which
        utterances were left out: CTC cannot align them (fewer frames than the text needs)
        or their loss is not finite."""
        logits, lens = self.net(batch["audio"], batch["audio_lens"])  # (B, T, V), (B,)
        targets = [torch.tensor(self.net.tokenizer.encode(t), dtype=torch.long) for t in batch["texts"]]
        target_lens = torch.tensor([len(t) for t in targets])
        # CTC in fp32 even under bf16 autocast: its sums of log-probabilities lose too much in bf16.
        with torch.autocast(self.device.type, enabled=False):
            log_probs = logits.float().log_softmax(-1)
            losses = self.ctc(log_probs.transpose(0, 1), torch.cat(targets), lens, target_lens)
        # A repeated character needs a blank between its two frames.
        needed = torch.tensor([len(t) + int((t[1:] == t[:-1]).sum()) for t in targets])
        skipped = (lens.cpu() < needed) | ~torch.isfinite(losses.detach()).cpu()
        kept = (~skipped).to(losses.device)
        per_token = losses / target_lens.clamp(min=1).to(losses.device)
        loss = per_token[kept].mean() if kept.any() else (log_probs * 0).sum()  # a zero with a graph
        return loss, log_probs, lens, skipped

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _, skipped = self._loss(batch)
        batch_size = len(batch["texts"])
        if skipped.any():
            ids = [i for i, s in zip(batch["ids"], skipped.tolist(), strict=True) if s]
            if len(ids) > self.hparams.max_skipped * batch_size:
                raise ValueError(
                    f"{len(ids)} of the {batch_size} utterances of a training batch have a text longer "
                    f"than their audio can carry under CTC, or a loss that is not finite (more than "
                    f"model.max_skipped {self.hparams.max_skipped:g}): {', '.join(ids[:5])}; check "
                    "their texts and durations in the manifest"
                )
            rank_zero_warn(f"CTC loss left out for {', '.join(ids[:5])} (counted in train_skipped)")
        self.log(
            "train_skipped", skipped.sum().float(), reduce_fx="sum", on_step=False, on_epoch=True,
            batch_size=batch_size, sync_dist=True,
        )  # fmt: skip
        self.log("train_loss", loss, prog_bar=True, batch_size=batch_size)
        self.log(
            "train_audio_seconds",
            batch["audio_lens"].sum() / SAMPLE_RATE,
            reduce_fx="sum",
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        return loss

    def _evaluate(self, batch: dict, split: str, dataloader_idx: int) -> None:
        loss, log_probs, lens, _ = self._loss(batch)
        hyps = self.decode(log_probs, lens)
        refs = [normalize_text(t, self.net.config.alphabet) for t in batch["texts"]]
        self.metrics[f"{split}_loss"].update(loss, weight=len(refs))
        for name in ("wer", "cer"):
            self.metrics[f"{split}_{name}"].update(hyps, refs)
        if self.set_names.get(split):
            # Each set's own scores: a dataloader logs only its own keys.
            set_name = self.set_names[split][dataloader_idx]
            for name in ("wer", "cer"):
                metric = self.set_metrics[f"{split}_{name}_{set_name}"]
                metric(hyps, refs)
                self.log(f"{split}_{name}_{set_name}", metric, add_dataloader_idx=False, batch_size=len(refs))

    def _log_pooled(self, split: str) -> None:
        for name in ("loss", "wer", "cer"):
            metric = self.metrics[f"{split}_{name}"]
            if metric.update_called:  # Lightning computes it over all processes, then resets it
                self.log(f"{split}_{name}", metric, prog_bar=True)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "val", dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_pooled("val")

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._log_pooled("test")

    def predict_step(self, batch: dict, batch_idx: int) -> list[dict]:
        logits, lens = self.net(batch["audio"], batch["audio_lens"])
        hyps = self.decode(logits.float().log_softmax(-1), lens)
        return [
            {"id": i, "text": h, "reference": r}
            for i, h, r in zip(batch["ids"], hyps, batch["texts"], strict=True)
        ]

    def decode(self, log_probs: torch.Tensor, lens: torch.Tensor) -> list[str]:
        """(B, T, V) log-probabilities, (B,) lengths -> greedy transcripts."""
        frame_shift = self.net.config.frame_shift
        return [
            " ".join(w.text for w in greedy_decode(lp[:n], self.net.tokenizer, frame_shift))
            for lp, n in zip(log_probs.detach().cpu(), lens.tolist(), strict=True)
        ]

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        return configure_schedule(self, optimizer, self.lr_scheduler(optimizer))


class CharPerplexity(MeanMetric):
    """exp of the mean loss per character, weighted by characters: the perplexity of a whole set."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()


class CharLMTraining(L.LightningModule):
    """Trains a :class:`CharLM` with cross-entropy on batches from :class:`TextDataModule`.

    Logs train_loss, {val,test}_loss (nats per character, end of sentence included) and
    {val,test}_ppl (perplexity per character, over the whole set).

    Args:
        net: the network's configuration (``model.net.*`` in YAML).
        optimizer: builds the optimizer from the parameters (AdamW: lr 1e-3, weight decay 1e-2).
        lr_scheduler: builds a per-step schedule, e.g. ``asr.training.WarmupLR``; None: constant LR.
    """

    def __init__(
        self,
        net: CharLMConfig | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.net = CharLM(net or CharLMConfig())
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.ppl = nn.ModuleDict({split: CharPerplexity() for split in ("val", "test")})

    def _loss(self, sentences: list[str]) -> tuple[torch.Tensor, int]:
        inputs, targets = self.net.batch(sentences)
        logits, _ = self.net(inputs)  # (B, L, V)
        # fp32 even under bf16 autocast: the loss is a log of small probabilities.
        loss = nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE)
        return loss, int((targets != IGNORE).sum())

    def training_step(self, batch: list[str], batch_idx: int) -> torch.Tensor:
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _evaluate(self, batch: list[str], split: str) -> None:
        loss, chars = self._loss(batch)
        self.log(f"{split}_loss", loss, prog_bar=True, batch_size=chars)  # weighted: per character
        self.ppl[split].update(loss, weight=chars)
        self.log(f"{split}_ppl", self.ppl[split], prog_bar=True)

    def validation_step(self, batch: list[str], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: list[str], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        return configure_schedule(self, optimizer, self.lr_scheduler and self.lr_scheduler(optimizer))
