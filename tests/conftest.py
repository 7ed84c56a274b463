"""Shared fixtures: a tiny spoken corpus made with espeak-ng, and small models."""

import pytest
import torch

from asr.model import ModelConfig, RecurrentCTC, save_model
from recipes.smoke.prepare import prepare

TINY = ModelConfig(n_mels=40, conv_channels=64, hidden_size=64, num_layers=2, subsampling=2)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict:
    """Manifests of 20 train, 4 dev and 4 test espeak-ng clips: {"train": path, ...}."""
    out = tmp_path_factory.mktemp("corpus")
    return {split: str(path) for split, path in prepare(out, num_train=20, num_dev=4, num_test=4).items()}


@pytest.fixture(scope="session")
def untrained_model_file(tmp_path_factory) -> str:
    """A model file with random weights: valid for every code path, transcripts are noise."""
    torch.manual_seed(0)
    return str(save_model(RecurrentCTC(TINY), tmp_path_factory.mktemp("model") / "model.pt"))


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> str:
    """A 16 kHz wav of espeak-ng saying a short sentence."""
    import soundfile as sf

    from recipes.smoke.prepare import synthesize

    path = tmp_path_factory.mktemp("audio") / "hello.wav"
    sf.write(path, synthesize("hello world this is a test"), 16000)
    return str(path)
