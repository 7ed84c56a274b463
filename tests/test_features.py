"""The log-mel front end: shapes, batching invariance, normalisation statistics and SpecAugment."""

import pytest
import torch

from asr.audio import SAMPLE_RATE
from asr.features import Augment, LogMel

N_MELS = 80
WIN = round(SAMPLE_RATE * 0.025)  # 25 ms window, in samples
HOP = round(SAMPLE_RATE * 0.010)  # 10 ms hop, in samples


def expected_frames(num_samples: int) -> int:
    """One frame per hop that fits a whole window; at least one."""
    return max(0, (num_samples - WIN) // HOP) + 1


def waves(*lengths: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(n, generator=generator) for n in lengths]


def pad(samples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (S_i,) waveforms -> (B, S_max) zero-padded batch and (B,) lengths."""
    lengths = torch.tensor([len(s) for s in samples])
    batch = torch.zeros(len(samples), int(lengths.max()))
    for row, s in enumerate(samples):
        batch[row, : len(s)] = s
    return batch, lengths


@pytest.fixture(params=[None, "mean", "meanvar"], ids=["global", "utterance-mean", "utterance-meanvar"])
def frontend(request) -> LogMel:
    return LogMel(n_mels=N_MELS, utterance_norm=request.param).eval()


@pytest.mark.parametrize(
    "num_samples", [1, 100, WIN - 1, WIN, WIN + 1, WIN + HOP - 1, WIN + HOP, SAMPLE_RATE]
)
def test_num_frames_counts_whole_windows(frontend, num_samples):
    assert frontend.num_frames(torch.tensor([num_samples])).item() == expected_frames(num_samples)


def test_output_shape_and_frame_counts(frontend):
    lengths = [SAMPLE_RATE, SAMPLE_RATE // 2, 3 * WIN]
    feats, frames = frontend(*pad(waves(*lengths)))

    assert feats.shape == (len(lengths), expected_frames(max(lengths)), N_MELS)
    assert frames.tolist() == [expected_frames(n) for n in lengths]


@pytest.mark.parametrize("num_samples", [WIN, WIN + 1, 1234, SAMPLE_RATE])
def test_frame_count_matches_the_frames_produced(frontend, num_samples):
    audio = waves(num_samples)[0].unsqueeze(0)
    feats, frames = frontend(audio, torch.tensor([num_samples]))
    assert feats.shape[1] == frames.item()


def test_features_are_float32_and_finite(frontend):
    feats, _ = frontend(*pad(waves(SAMPLE_RATE, 2000)))
    assert feats.dtype == torch.float32
    assert torch.isfinite(feats).all()


def test_silence_gives_finite_features(frontend):
    feats, _ = frontend(torch.zeros(1, SAMPLE_RATE), torch.tensor([SAMPLE_RATE]))
    assert torch.isfinite(feats).all()


@pytest.mark.parametrize("num_samples", [1, 100, WIN - 1])
def test_input_shorter_than_a_window_gives_one_frame(frontend, num_samples):
    feats, frames = frontend(waves(num_samples)[0].unsqueeze(0), torch.tensor([num_samples]))
    assert frames.tolist() == [1]
    assert feats.shape == (1, 1, N_MELS)


def test_utterance_gets_the_same_features_alone_and_in_a_padded_batch(frontend):
    utterances = waves(SAMPLE_RATE, 7000, 2 * WIN + 17, 100)
    batch_feats, batch_frames = frontend(*pad(utterances))

    for row, audio in enumerate(utterances):
        alone, frames = frontend(audio.unsqueeze(0), torch.tensor([len(audio)]))
        assert frames.item() == batch_frames[row].item()
        torch.testing.assert_close(batch_feats[row, : frames.item()], alone[0], atol=1e-5, rtol=0)


def test_padded_frames_are_exactly_zero(frontend):
    feats, frames = frontend(*pad(waves(SAMPLE_RATE, 5000, 100)))
    for row, count in enumerate(frames.tolist()):
        assert (feats[row, count:] == 0).all()


def test_padded_frames_are_zero_in_train_mode_too():
    frontend = LogMel(n_mels=N_MELS).train()
    feats, frames = frontend(*pad(waves(SAMPLE_RATE, 5000, 100)))
    for row, count in enumerate(frames.tolist()):
        assert (feats[row, count:] == 0).all()


# Normalisation statistics


def test_features_are_unnormalised_until_stats_are_fitted():
    frontend = LogMel(n_mels=N_MELS).eval()
    audio, lengths = pad(waves(4000))
    feats, _ = frontend(audio, lengths)
    assert not frontend.has_stats
    torch.testing.assert_close(feats, frontend.log_mel(audio))


def test_fit_stats_normalises_real_frames_to_zero_mean_unit_std(frontend):
    batches = [pad(waves(SAMPLE_RATE, 3000, 9000, seed=1)), pad(waves(5000, 12000, seed=2))]

    frontend.fit_stats(batches)

    real = []
    for audio, lengths in batches:
        feats, frames = frontend(audio, lengths)
        real += [feats[row, :count] for row, count in enumerate(frames.tolist())]
    real = torch.cat(real)
    torch.testing.assert_close(real.mean(0), torch.zeros(N_MELS), atol=1e-4, rtol=0)
    torch.testing.assert_close(real.std(0, unbiased=False), torch.ones(N_MELS), atol=1e-4, rtol=0)


@pytest.mark.parametrize("norm", ["mean", "meanvar"])
def test_utterance_norm_removes_the_recording_level(norm):
    frontend = LogMel(n_mels=N_MELS, utterance_norm=norm).eval()
    audio, lengths = pad(waves(SAMPLE_RATE, 7000))
    loud, _ = frontend(audio * 4, lengths)
    quiet, frames = frontend(audio, lengths)
    torch.testing.assert_close(loud, quiet, atol=1e-3, rtol=0)
    for row, count in enumerate(frames.tolist()):  # each utterance's real frames: zero mean
        torch.testing.assert_close(quiet[row, :count].mean(0), torch.zeros(N_MELS), atol=1e-4, rtol=0)
        spread = quiet[row, :count].std(0, unbiased=False)
        if norm == "meanvar":  # ... and unit variance in every mel bin
            torch.testing.assert_close(spread, torch.ones(N_MELS), atol=1e-3, rtol=0)
        else:
            assert (spread - 1).abs().max() > 0.05


def test_utterance_variance_of_digital_silence_stays_finite():
    frontend = LogMel(n_mels=N_MELS, utterance_norm="meanvar").eval()
    feats, _ = frontend(torch.zeros(1, SAMPLE_RATE), torch.tensor([SAMPLE_RATE]))
    assert torch.isfinite(feats).all() and feats.abs().max() < 1e-2  # rounding only


def test_unknown_utterance_norm_is_refused():
    with pytest.raises(ValueError, match="utterance_norm"):
        LogMel(n_mels=N_MELS, utterance_norm="median")


def test_fit_stats_counts_real_frames_only(frontend):
    lengths = [SAMPLE_RATE, 3000, 100]
    frontend.fit_stats([pad(waves(*lengths))])
    assert frontend.frames_seen.item() == sum(expected_frames(n) for n in lengths)
    assert frontend.has_stats


def test_fit_stats_ignores_padding(frontend):
    utterances = waves(SAMPLE_RATE, 3000, 600, 100, seed=3)
    unpadded = LogMel(n_mels=N_MELS, utterance_norm=frontend.utterance_norm)
    unpadded.fit_stats([(audio.unsqueeze(0), torch.tensor([len(audio)])) for audio in utterances])

    frontend.fit_stats([pad(utterances)])

    torch.testing.assert_close(frontend.mean, unpadded.mean, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(frontend.std, unpadded.std, atol=1e-5, rtol=1e-6)
    assert frontend.frames_seen.item() == unpadded.frames_seen.item()


def test_fit_stats_without_batches_raises(frontend):
    with pytest.raises(ValueError, match="no audio frames"):
        frontend.fit_stats([])


def test_statistics_are_in_the_state_dict(frontend):
    frontend.fit_stats([pad(waves(SAMPLE_RATE, 4000))])
    state = frontend.state_dict()

    assert {"mean", "std", "frames_seen"} <= set(state)
    restored = LogMel(n_mels=N_MELS)
    restored.load_state_dict(state)
    assert restored.has_stats
    torch.testing.assert_close(restored.mean, frontend.mean)
    torch.testing.assert_close(restored.std, frontend.std)
    assert restored.frames_seen.item() == frontend.frames_seen.item()


def test_statistic_buffers_have_one_value_per_mel_bin(frontend):
    assert frontend.mean.shape == frontend.std.shape == (N_MELS,)
    assert frontend.frames_seen.shape == ()


# SpecAugment


def test_spec_augment_changes_features_in_train_mode(frontend):
    audio, lengths = pad(waves(SAMPLE_RATE, SAMPLE_RATE))
    clean, _ = frontend(audio, lengths)

    torch.manual_seed(0)
    augmented, frames = frontend.train()(audio, lengths)

    assert augmented.shape == clean.shape
    assert frames.tolist() == [expected_frames(SAMPLE_RATE)] * 2
    assert not torch.equal(augmented, clean)


def test_spec_augment_only_masks_to_zero(frontend):
    audio, lengths = pad(waves(SAMPLE_RATE))
    clean, _ = frontend(audio, lengths)

    torch.manual_seed(0)
    augmented, _ = frontend.train()(audio, lengths)

    changed = augmented != clean
    assert changed.any()
    assert (augmented[changed] == 0).all()


def test_spec_augment_is_off_in_eval_mode(frontend):
    audio, lengths = pad(waves(SAMPLE_RATE))
    frontend.fit_stats([(audio, lengths)])

    torch.manual_seed(0)
    first, _ = frontend(audio, lengths)
    torch.manual_seed(1)
    second, _ = frontend(audio, lengths)

    assert torch.equal(first, second)
    log_mel = frontend.log_mel(audio)
    if frontend.utterance_norm:
        log_mel = log_mel - log_mel.mean(1, keepdim=True)
    if frontend.utterance_norm == "meanvar":
        log_mel = log_mel / log_mel.std(1, unbiased=False, keepdim=True)
    torch.testing.assert_close(first, (log_mel - frontend.mean) / frontend.std)


def test_time_masks_are_capped_by_each_utterance_length():
    # Two masks of up to 40 frames would hide most of a short clip; the ratio caps each mask.
    frontend = LogMel(N_MELS, augment=Augment(freq_masks=0, time_masks=2, time_mask_ratio=0.1)).train()
    audio, lengths = pad(waves(SAMPLE_RATE // 2, 4 * SAMPLE_RATE))
    clean, frames = frontend.eval()(audio, lengths)
    frontend.train()

    torch.manual_seed(0)
    for _ in range(50):
        augmented, _ = frontend(audio, lengths)
        masked = ((augmented == 0) & (clean != 0)).all(-1)  # (B, T) whole frames zeroed
        for row, n in enumerate(frames.tolist()):
            assert masked[row, :n].sum() <= 2 * int(0.1 * n)
    assert masked.any()


def test_frequency_masks_zero_whole_bands_within_their_width():
    frontend = LogMel(N_MELS, augment=Augment(freq_masks=1, freq_mask_width=10, time_masks=0))
    audio, lengths = pad(waves(SAMPLE_RATE))
    clean, _ = frontend.eval()(audio, lengths)

    frontend.train()
    torch.manual_seed(3)
    widths = []
    for _ in range(20):
        augmented, _ = frontend(audio, lengths)
        zeroed = ((augmented == 0) & (clean != 0)).all(1)  # (B, F) bands zeroed in every frame
        bands = zeroed[0].nonzero().flatten()
        assert (bands.diff() == 1).all()  # one contiguous band
        widths.append(len(bands))
    assert 0 < max(widths) <= 10


def test_warp_of_one_gives_the_mel_spectrogram_filters():
    frontend = LogMel(N_MELS)
    filters = frontend.warped_filters(torch.ones(2))

    assert filters.shape == (2, *frontend.mel.mel_scale.fb.shape)
    torch.testing.assert_close(filters[0], frontend.mel.mel_scale.fb, atol=1e-5, rtol=1e-4)
    audio, lengths = pad(waves(SAMPLE_RATE, SAMPLE_RATE, seed=1))
    torch.testing.assert_close(
        frontend.log_mel(audio, torch.ones(2)), frontend.log_mel(audio), atol=1e-4, rtol=1e-4
    )


def test_warp_moves_a_tone_up_or_down_the_mel_bins():
    frontend = LogMel(N_MELS)
    t = torch.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = torch.sin(2 * torch.pi * 1000 * t).repeat(3, 1)

    log_mel = frontend.log_mel(tone, torch.tensor([0.9, 1.0, 1.1]))
    peaks = log_mel.mean(1).argmax(-1).tolist()

    # A factor above 1 reads 1 kHz as 1.1 kHz: a formant moves up, as in a shorter vocal tract.
    assert peaks[0] < peaks[1] < peaks[2]


def test_vtlp_changes_training_features_only():
    frontend = LogMel(N_MELS, augment=Augment(freq_masks=0, time_masks=0, warp=0.1))
    audio, lengths = pad(waves(SAMPLE_RATE))
    clean, _ = frontend.eval()(audio, lengths)

    torch.manual_seed(0)
    warped, _ = frontend.train()(audio, lengths)

    assert warped.shape == clean.shape
    assert not torch.allclose(warped, clean)
    assert torch.equal(frontend.eval()(audio, lengths)[0], clean)


def test_dither_gives_digital_silence_a_noise_floor_in_training_only():
    frontend = LogMel(N_MELS, augment=Augment(freq_masks=0, time_masks=0, dither=1e-3))
    silence = torch.zeros(3, SAMPLE_RATE)
    lengths = torch.full((3,), SAMPLE_RATE)
    floor, _ = frontend.eval()(silence, lengths)  # unnormalised: no statistics fitted
    assert floor.std() < 1e-4  # every frame at the log floor: nothing a recording ever holds

    torch.manual_seed(0)
    feats, _ = frontend.train()(silence, lengths)
    assert (feats > floor.max()).float().mean() > 0.9
    # Each utterance its own level, between one 16-bit step and the most asked for.
    levels = feats.mean(dim=(1, 2))
    assert levels.max() - levels.min() > 0.5
    assert torch.equal(frontend.eval()(silence, lengths)[0], floor)


@pytest.mark.parametrize(
    "settings", [{"warp": 1.0}, {"warp": -0.1}, {"time_mask_ratio": 1.5}, {"dither": -1e-3}, {"dither": 1.0}]
)
def test_augment_settings_out_of_range_are_refused(settings):
    with pytest.raises(ValueError, match="augment"):
        Augment(**settings)
