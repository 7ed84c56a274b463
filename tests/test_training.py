import dataclasses
import io

import lightning as L
import pytest
import torch
from torchmetrics.functional.text import char_error_rate

from asr.data import SpeechDataModule, read_cuts
from asr.model import ModelConfig, RecurrentCTC, load_model, save_model
from asr.text import normalize_text
from asr.training import CTCTraining, WarmupLR
from tests.conftest import TINY


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    return L.Trainer(**{**defaults, **kwargs})


def test_warmup_rises_linearly_then_decays_as_inverse_sqrt():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = WarmupLR(optimizer, warmup_steps=10)
    factors = [scheduler._factor(step) for step in (1, 5, 10, 40)]
    assert factors == pytest.approx([0.1, 0.5, 1.0, 0.5])


def test_warmup_then_cosine_to_the_final_factor_at_the_last_step():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = WarmupLR(optimizer, warmup_steps=10, decay="cosine", final_factor=0.1)
    scheduler.set_budget(steps=110)
    factors = [scheduler._factor(step) for step in (5, 10, 60, 110, 500)]
    assert factors == pytest.approx([0.5, 1.0, 0.55, 0.1, 0.1])
    scheduler.set_budget(steps=5)  # a run shorter than its warm-up (a dev run) never decays
    assert scheduler._factor(5) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="max_steps or trainer.max_time"):
        scheduler.set_budget()
    with pytest.raises(ValueError, match="decay"):
        WarmupLR(optimizer, decay="linear")


def test_cosine_follows_the_time_budget_when_it_runs_out_first():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = WarmupLR(optimizer, warmup_steps=10, decay="cosine", final_factor=0.1)
    spent = [0.5]
    scheduler.set_budget(steps=1000, time_spent=lambda: spent[0])
    assert scheduler._factor(20) == pytest.approx(0.55)  # half the time, 1 % of the steps
    spent[0] = 1.2  # past the budget: the final factor, as the trainer stops
    assert scheduler._factor(30) == pytest.approx(0.1)
    spent[0] = 0.0
    assert scheduler._factor(505) == pytest.approx(0.55)  # the steps run out first


def test_the_trainer_gives_the_schedule_its_budget_and_checkpoints_leave_it_out():
    module = CTCTraining(
        ModelConfig(n_mels=40, hidden_size=32, num_layers=1, conv_channels=32),
        lr_scheduler=lambda o: WarmupLR(o, warmup_steps=10, decay="cosine"),
    )
    module.trainer = L.Trainer(max_steps=200, max_time="00:00:30:00", logger=False)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.total_steps == 200
    assert scheduler.time_spent() == pytest.approx(0.0)
    state = scheduler.state_dict()
    assert "time_spent" not in state and "total_steps" not in state
    torch.save(state, io.BytesIO())  # a checkpoint can hold it


def test_feature_statistics_come_from_training_data(corpus, tmp_path):
    module = CTCTraining(ModelConfig(n_mels=40, hidden_size=32, num_layers=1, conv_channels=32))
    data = SpeechDataModule(corpus["train"], corpus["dev"], max_duration=20, num_workers=0)
    _trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(module, data)
    frontend = module.net.frontend
    assert frontend.has_stats
    # The statistics describe log-mel energies of speech: clearly not the identity defaults.
    assert frontend.mean.abs().mean() > 1.0 and frontend.std.mean() > 0.5


def test_bf16_mixed_training_step_gives_finite_loss(corpus, tmp_path):
    module = CTCTraining(ModelConfig(n_mels=40, hidden_size=32, num_layers=1, conv_channels=32))
    data = SpeechDataModule(corpus["train"], corpus["dev"], max_duration=20, num_workers=0)
    trainer = _trainer(
        tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=1, precision="bf16-mixed"
    )
    trainer.fit(module, data)
    assert torch.isfinite(trainer.callback_metrics["train_loss"])
    assert torch.isfinite(trainer.callback_metrics["val_loss"])


def test_utterances_ctc_cannot_align_are_counted_and_too_many_stop_training():
    torch.manual_seed(0)
    module = CTCTraining(dataclasses.replace(TINY, subsampling=2), augment=None, max_skipped=0.5).eval()
    audio = torch.randn(3, 8100) * 0.1
    batch = {"audio": audio, "audio_lens": torch.full((3,), 8100), "ids": ["ok", "long", "repeats"]}
    frames = int(module.net(audio[:1], batch["audio_lens"][:1])[1])
    assert frames % 2 == 1  # k letters "a" need 2k - 1 frames (a blank between each two)
    k = (frames + 1) // 2
    # Fewer letters than frames but one more repeat than fits; then exactly as many as fit.
    batch["texts"] = ["hello", "a" * (k + 1), "a" * k]
    loss, _, _, skipped = module._loss(batch)
    assert skipped.tolist() == [False, True, False]
    expected = torch.nn.CTCLoss(blank=module.net.tokenizer.blank_id)(*_ctc_inputs(module, batch, [0, 2]))
    torch.testing.assert_close(loss, expected)  # the mean over the others, per target token
    assert torch.isfinite(loss)

    batch["texts"] = ["hello", "a" * 30, "b" * 40]
    with pytest.raises(ValueError, match=r"2 of the 3 utterances .*: long, repeats; check"):
        module.training_step(batch, 0)


def _ctc_inputs(module, batch, rows):
    """What a plain mean-reduced CTC loss takes for ``rows`` of the batch alone."""
    logits, lens = module.net(batch["audio"][rows], batch["audio_lens"][rows])
    targets = [torch.tensor(module.net.tokenizer.encode(batch["texts"][r])) for r in rows]
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)
    return log_probs, torch.cat(targets), lens, torch.tensor([len(t) for t in targets])


def test_model_learns_twenty_utterances(corpus, tmp_path):
    """The whole chain learns: the model overfits 20 clips to a low character error rate."""
    torch.manual_seed(0)
    net = ModelConfig(n_mels=80, conv_channels=128, hidden_size=128, num_layers=2, subsampling=2, dropout=0.0)
    module = CTCTraining(
        net,
        optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3),
        lr_scheduler=lambda o: WarmupLR(o, warmup_steps=20),
        augment=None,
    )
    data = SpeechDataModule(corpus["train"], corpus["train"], max_duration=30, num_workers=0)
    _trainer(tmp_path, max_epochs=60, check_val_every_n_epoch=20, gradient_clip_val=5.0).fit(module, data)
    cuts = list(read_cuts(corpus["train"]))
    results = module.net.transcribe_batch([c.load_audio()[0] for c in cuts], sample_rate=16000)
    refs = [normalize_text(c.supervisions[0].text) for c in cuts]
    cer = float(char_error_rate([r.text for r in results], refs))
    assert cer < 0.10, f"CER {cer:.3f} after overfitting; first: {results[0].text!r} vs {refs[0]!r}"


def test_fine_tuning_starts_from_a_model_file_and_refuses_another_network(tmp_path, untrained_model_file):
    start = load_model(untrained_model_file)
    module = CTCTraining(TINY, init_from=untrained_model_file)
    # Weights and the feature statistics (buffers) alike.
    for name, tensor in start.state_dict().items():
        assert torch.equal(module.net.state_dict()[name], tensor), name
    # Dropout has no weights: it may differ.
    CTCTraining(dataclasses.replace(TINY, dropout=0.3), init_from=untrained_model_file)
    with pytest.raises(ValueError, match=r"init_from .*model\.pt: .*hidden_size: 64 there, 32 here"):
        CTCTraining(dataclasses.replace(TINY, hidden_size=32), init_from=untrained_model_file)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="garbage.pt: not a model file or training checkpoint"):
        CTCTraining(TINY, init_from=str(garbage))


@pytest.mark.parametrize("proj_size", [0, 8])
def test_a_unidirectional_network_starts_from_the_forward_direction_of_a_bidirectional_one(
    tmp_path, proj_size
):
    torch.manual_seed(0)
    bi = RecurrentCTC(dataclasses.replace(TINY, proj_size=proj_size))
    bi.frontend.fit_stats([(torch.randn(2, 16000) * 0.1, torch.tensor([16000, 9000]))])
    path = str(save_model(bi, tmp_path / "bi.pt"))
    bi = load_model(path)  # as stored (float16 weights)
    other_norm = "global" if TINY.feature_norm == "utterance" else "utterance"
    config = dataclasses.replace(TINY, proj_size=proj_size, bidirectional=False, feature_norm=other_norm)
    uni = CTCTraining(config, init_from=path).net
    assert torch.equal(uni.subsample.conv2.weight, bi.subsample.conv2.weight)
    assert not uni.frontend.has_stats  # another normalisation: the run fits its own statistics
    # Each layer computes what the bidirectional one's forward direction computes when the
    # backward half of its input is zero, and so does the output layer.
    size = proj_size or TINY.hidden_size
    h = torch.randn(1, 7, TINY.conv_channels)
    with torch.no_grad():
        for n, (ours, theirs) in enumerate(zip(uni.layers, bi.layers, strict=True)):
            padded = h if n == 0 else torch.cat([h, torch.zeros_like(h)], dim=-1)
            expected, _ = theirs.forward_rnn(padded)
            h, _ = ours.forward_rnn(h)
            torch.testing.assert_close(h, expected)
            assert torch.equal(uni.norms[n].weight, bi.norms[n].weight[:size])
        torch.testing.assert_close(uni.head(h), bi.head(torch.cat([h, torch.zeros_like(h)], dim=-1)))
    # Not the other way round: a unidirectional network lacks the backward direction.
    save_model(RecurrentCTC(config), tmp_path / "uni.pt")
    with pytest.raises(ValueError, match="bidirectional: False there, True here"):
        CTCTraining(TINY, init_from=str(tmp_path / "uni.pt"))


def test_fine_tuning_from_a_training_checkpoint(corpus, tmp_path):
    net = ModelConfig(n_mels=40, hidden_size=32, num_layers=1, conv_channels=32)
    first = CTCTraining(net)
    data = SpeechDataModule(corpus["train"], corpus["dev"], max_duration=20, num_workers=0)
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(first, data)
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    second = CTCTraining(net, init_from=str(tmp_path / "run.ckpt"))
    for name, tensor in first.net.state_dict().items():
        assert torch.equal(second.net.state_dict()[name], tensor), name


def test_several_validation_sets_are_scored_each_and_together(corpus, tmp_path):
    module = CTCTraining(ModelConfig(n_mels=40, hidden_size=32, num_layers=1, conv_channels=32))
    data = SpeechDataModule(
        [corpus["train"], corpus["dev"]],
        [corpus["dev"], corpus["test"]],
        train_weights=[0.5, 0.5],
        max_duration=20,
        num_workers=0,
    )
    trainer = _trainer(
        tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=2, num_sanity_val_steps=0
    )
    trainer.fit(module, data)
    metrics = trainer.callback_metrics
    for key in ("val_wer", "val_cer", "val_loss", "val_wer_dev", "val_wer_test", "val_cer_dev"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    # Pooled over both sets: between the two sets' own figures.
    low, high = sorted([float(metrics["val_cer_dev"]), float(metrics["val_cer_test"])])
    assert low - 1e-6 <= float(metrics["val_cer"]) <= high + 1e-6
