"""asr plot (a clip as the model sees it; training curves) and asr evaluate --report."""

import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from asr.cli import main
from asr.decoding import DecodingOptions
from asr.inference import log_probs_batch
from asr.model import load_model
from asr.plots import (
    CLIP_SIZE,
    CURVES_SIZE,
    DPI,
    clip_figure,
    curves_figure,
    look,
    read_metrics,
    save_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GREEDY = DecodingOptions()


def assert_png(path, size_inches) -> None:
    """A real PNG whose pixels are what the figure's size in inches x DPI says."""
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        assert image.size == tuple(round(side * DPI) for side in size_inches)


def panel(fig, label: str):
    return next(ax for ax in fig.axes if ax.get_ylabel().startswith(label))


def test_clip_picture_shows_the_front_end_output_and_the_posteriors(
    untrained_model_file, speech_wav, tmp_path
):
    model = load_model(untrained_model_file)
    view = look(model, speech_wav, options=GREEDY)
    wave = torch.from_numpy(view.samples)
    model.frontend.eval()
    with torch.no_grad():
        feats, frames = model.frontend(wave[None], torch.tensor([len(wave)]))
    assert view.features.shape == (frames[0], model.config.n_mels)
    np.testing.assert_allclose(view.features, feats[0].numpy(), atol=1e-5)
    [(_, log_probs)] = list(log_probs_batch(model, [wave]))
    assert view.log_probs.shape == log_probs.shape
    assert len(view.log_probs) == -(-len(view.features) // model.config.subsampling)

    fig = clip_figure(view, "hello.wav")
    # The log-mel panel draws exactly the front end's frames, on the clip's time axis.
    mesh = panel(fig, "front end").collections[0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(view.features.T.shape), view.features.T)
    chars = panel(fig, "P(character)").images[0]
    assert chars.get_extent()[1] == pytest.approx(len(view.log_probs) * model.config.frame_shift)
    assert all(ax.get_xlim() == (0, pytest.approx(len(wave) / 16000)) for ax in fig.axes[:5])
    path = save_figure(fig, tmp_path / "clip.png")
    assert_png(path, fig.get_size_inches())


def test_words_are_drawn_where_the_default_model_heard_them(speech_wav):
    model = load_model()
    view = look(model, speech_wav, options=GREEDY)
    words = view.transcription.words
    # espeak-ng said "hello world this is a test": the shipped model hears most of it.
    assert len({w.text for w in words} & set("hello world this is a test".split())) >= 3
    ax = panel(clip_figure(view), "words")
    assert [t.get_text() for t in ax.texts] == [w.text for w in words]
    boxes = [p for p in ax.patches if p.get_gid() == "word"]
    assert [(b.get_x(), b.get_x() + b.get_width()) for b in boxes] == [
        (pytest.approx(w.start), pytest.approx(w.end)) for w in words
    ]
    assert all(0 <= w.start < w.end <= view.transcription.duration + 0.1 for w in words)


def test_plot_command_writes_the_clip_picture(untrained_model_file, speech_wav, tmp_path, capsys):
    out = tmp_path / "pictures" / "clip.png"
    assert main(["plot", speech_wav, "--model", untrained_model_file, "-o", str(out)]) == 0
    assert_png(out, CLIP_SIZE)
    assert capsys.readouterr().out.strip() == str(out)
    assert not list(out.parent.glob(".partial-*"))


def write_metrics(folder, header: str, rows: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.csv").write_text("\n".join([header, *rows]) + "\n")


def test_metrics_curves_from_a_csv_logger_file(tmp_path, capsys):
    rng = random.Random(0)
    header = "epoch,step,train_loss,train_skipped,val_cer,val_cer_dev,val_loss,"
    header += "val_wer,val_wer_dev,val_wer_dev_human"
    rows, val = [], {}
    for step in range(9, 300, 10):
        rows.append(f"0,{step},{3 / (1 + step / 50) + rng.random() / 10:.4f},,,,,,,")
        if step % 100 == 99:
            wer = [rng.random() for _ in range(3)]
            val[step] = wer
            rows.append(f"0,{step},,,0.2,0.1,1.5,{wer[0]},{wer[1]},{wer[2]}")
    run = tmp_path / "lightning_logs" / "version_0"
    write_metrics(run, header, rows)
    metrics = read_metrics(run)
    steps, values = metrics["val_wer"]
    assert list(steps) == list(val) and list(values) == [w[0] for w in val.values()]
    assert len(metrics["train_loss"][0]) == 30 and "train_skipped" not in metrics  # a column with no value

    fig = curves_figure(metrics)
    lines = {line.get_label(): line for ax in fig.axes for line in ax.lines}
    assert {"train_loss", "val_loss", "val_wer", "val_wer_dev", "val_wer_dev_human", "val_cer"} <= set(lines)
    np.testing.assert_allclose(lines["val_wer_dev_human"].get_ydata(), [100 * w[2] for w in val.values()])

    out = tmp_path / "curves.png"
    assert main(["plot", "--metrics", str(run), "-o", str(out)]) == 0
    assert_png(out, CURVES_SIZE)


def test_metrics_errors_name_the_folder_and_the_problem(tmp_path, capsys):
    empty = tmp_path / "run"
    empty.mkdir()
    with pytest.raises(ValueError, match=rf"{re.escape(str(empty))}: no metrics.csv"):
        read_metrics(empty)
    assert main(["plot", "--metrics", str(empty), "-o", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no metrics.csv" in err and str(empty) in err
    assert not (tmp_path / "c.png").exists()

    write_metrics(empty, "epoch,train_loss", ["0,1.5"])
    with pytest.raises(ValueError, match=r"metrics.csv: no 'step' column \(its columns: epoch, train_loss\)"):
        read_metrics(empty)


def test_transcription_never_imports_matplotlib(untrained_model_file, speech_wav):
    code = (
        "import sys; from asr.cli import main; "
        f"main(['transcribe', '--model', {untrained_model_file!r}, {speech_wav!r}]); "
        "print('matplotlib' in sys.modules, 'asr.plots' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "False False"
