"""What the corpus recipe tests share: speech to build fixtures with, one training step, CLI runs."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from asr.cli import main as asr_main
from recipes.smoke.prepare import synthesize

REPO = Path(__file__).parents[2]
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def speak(text: str, rate: int = 16000) -> np.ndarray:
    """espeak-ng saying ``text`` as mono float32 at ``rate`` Hz (the rate the corpus stores)."""
    samples = synthesize(text)
    return samples if rate == 16000 else soxr.resample(samples, 16000, rate).astype(np.float32)


def fit_one_step(recipe: str, manifests: dict[str, Path], root: Path) -> None:
    """One training and one validation batch through ``asr fit`` with the recipe's config.yaml."""
    asr_main(
        [
            "fit", "--config", str(REPO / "recipes" / recipe / "config.yaml"),
            "--data.train_cuts", str(manifests["train"]), "--data.val_cuts", str(manifests["dev"]),
            "--data.test_cuts", str(manifests["test"]), "--data.num_workers", "0",
            "--model.net.hidden_size", "32", "--model.net.conv_channels", "32", "--model.stats_batches", "1",
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
            "--trainer.fast_dev_run", "1",
        ]
    )  # fmt: skip


def print_config(recipe: str, config: str, capsys) -> str:
    """The full configuration ``asr fit --print_config`` makes of ``recipes/<recipe>/<config>``."""
    with pytest.raises(SystemExit) as exit_info:
        asr_main(["fit", "--config", str(REPO / "recipes" / recipe / config), "--print_config"])
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def run_main(main, argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of a recipe's ``main(argv)``."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr().err


def assert_clear_error(main, corpus_dir: Path, out_dir: Path, capsys) -> None:
    """``main`` on a corpus folder that is missing or empty: exit 1 and one line naming it, no traceback."""
    code, err = run_main(main, ["--corpus-dir", str(corpus_dir), "--out", str(out_dir)], capsys)
    assert code == 1
    assert err.count("\n") == 1 and str(corpus_dir) in err and "expected" in err and "Traceback" not in err


def write_tone(path: Path, seconds: float, rate: int = 16000, **kwargs) -> Path:
    """A quiet tone of ``seconds`` at ``rate`` Hz written to ``path`` (format from its suffix)."""
    t = np.arange(int(seconds * rate)) / rate
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, **kwargs)
    return path
