"""Pictures for debugging a model: a clip as the model heard, saw and read it, its training curves.

``asr plot CLIP`` stacks, on one time axis, the waveform, the front end's normalised log-mel
frames (what the network reads, not a spectrogram computed beside it), the CTC posteriors of
each output frame and the recognized words; ``asr plot --metrics DIR`` draws a training run's
loss and WER/CER curves from Lightning's ``metrics.csv``. matplotlib is imported inside the
functions and renders with Agg (no display), so ``asr transcribe`` never loads it.

Times follow the decoder's convention (:func:`asr.decoding.words_from_tokens`): frame ``t``
spans ``t * shift .. (t + 1) * shift`` seconds, so the word boxes line up with the frames they
were read from.
"""

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from asr.audio import SAMPLE_RATE, load_audio
from asr.decoding import DecodingOptions, Transcription
from asr.files import write_atomically
from asr.inference import default_options, log_probs_batch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100  # pixels per inch of every saved picture: a figure of W x H inches is W*DPI x H*DPI pixels
CLIP_SIZE = (12.0, 8.0)  # inches
CURVES_SIZE = (10.0, 7.0)
# A character gets a row of the posterior map when some frame gives it this probability.
LIKELY = 0.05
MAX_FREQUENCY = SAMPLE_RATE / 2  # the mel filters reach Nyquist
# Lightning CSVLogger columns drawn by --metrics: losses, and WER/CER pooled or per set.
LOSS_COLUMN = re.compile(r"(train|val)_loss")
ERROR_COLUMN = re.compile(r"val_(wer|cer)(?:_(.+))?")


@dataclass(frozen=True)
class ClipView:
    """What a model made of one clip: everything :func:`clip_figure` draws."""

    samples: np.ndarray  # (S,) mono 16 kHz
    features: np.ndarray  # (T, F) the front end's normalised log-mel frames (eval mode)
    hop: float  # seconds between feature frames
    log_probs: np.ndarray  # (T', V) CTC log-probabilities of each output frame
    frame_shift: float  # seconds between output frames
    tokens: list[str]  # the V output symbols, the blank first
    transcription: Transcription
    decoder: str  # DecodingOptions.name of the transcription


def look(model, audio, sample_rate: int | None = None, options: DecodingOptions | None = None) -> ClipView:
    """Run ``model`` (a :class:`~asr.model.RecurrentCTC`) over one clip (path, array or tensor;
    ``sample_rate`` for arrays) and keep every stage: features, posteriors and the words of
    ``model.transcribe`` with ``options`` (default: the model's own decoding).

    The posteriors come from one forward pass over the whole clip; a clip longer than 30 s is
    transcribed in pieces cut at pauses (as ``asr transcribe`` does), so there its words may
    differ slightly from what the drawn posteriors alone would give.
    """
    if not hasattr(model, "frontend"):
        raise ValueError("the picture shows the network's front end: give a model file (.pt), not ONNX")
    options = options or default_options(model)
    samples = load_audio(audio, sample_rate)
    wave = torch.from_numpy(samples)
    _, log_probs = next(log_probs_batch(model, [wave]))
    return ClipView(
        samples=samples,
        features=frontend_frames(model, wave).numpy(),
        hop=model.frontend.hop_length / SAMPLE_RATE,
        log_probs=log_probs.numpy(),
        frame_shift=model.config.frame_shift,
        tokens=list(model.tokenizer.tokens),
        transcription=model.transcribe(samples, SAMPLE_RATE, options),
        decoder=options.name,
    )


@torch.inference_mode()
def frontend_frames(model, wave: torch.Tensor) -> torch.Tensor:
    """(S,) 16 kHz waveform -> (T, F) the normalised log-mel frames the network reads, in eval
    mode (no SpecAugment, dither or VTLP)."""
    frontend = model.frontend
    was_training = frontend.training
    frontend.eval()
    try:
        lengths = torch.tensor([len(wave)], device=model.device)
        feats, frames = frontend(wave[None].to(model.device), lengths)
    finally:
        frontend.train(was_training)
    return feats[0, : frames[0]].float().cpu()


def clip_figure(view: ClipView, title: str = "") -> "Figure":
    """Waveform, log-mel frames, P(blank), P(character) and word boxes, stacked on one time axis."""
    import librosa.display
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    fig = _figure(CLIP_SIZE)
    axes = fig.subplots(5, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.8, 0.6, 2.2, 0.8]})
    wave_ax, mel_ax, blank_ax, chars_ax, words_ax = axes
    fig.subplots_adjust(left=0.08, right=0.93, top=0.93, bottom=0.07, hspace=0.12)
    words = view.transcription.words

    librosa.display.waveshow(view.samples, sr=SAMPLE_RATE, ax=wave_ax, axis=None, color="tab:blue")
    wave_ax.set_ylabel("waveform")

    centres = (np.arange(len(view.features)) + 0.5) * view.hop  # specshow makes the edges between them
    mesh = librosa.display.specshow(
        view.features.T, x_coords=centres, y_axis="mel", fmax=MAX_FREQUENCY, htk=True, ax=mel_ax, cmap="magma"
    )
    mel_ax.set_ylabel("front end\nlog-mel (Hz)")
    _colorbar(fig, mel_ax, mesh, "normalised")

    _draw_posteriors(fig, blank_ax, chars_ax, view)
    _draw_words(words_ax, words)
    for ax in axes[:-1]:
        for word in words:
            ax.axvline(word.start, color="tab:cyan", linewidth=0.6, alpha=0.7)
    # librosa's panels remove the time ticks they share with the others: seconds, as matplotlib counts
    words_ax.xaxis.set_major_locator(MaxNLocator(nbins=15))
    words_ax.xaxis.set_major_formatter(ScalarFormatter())
    words_ax.set_xlim(0, len(view.samples) / SAMPLE_RATE)
    words_ax.set_xlabel("time (s)")
    first, _, rest = title.partition("\n")  # the decoder goes on the first line
    fig.suptitle(
        f"{first}  [{view.decoder}]".lstrip() + (f"\n{rest}" if rest else ""), fontsize=10, x=0.08, ha="left"
    )
    return fig


def likely_characters(probs: np.ndarray) -> list[int]:
    """(T, V) posteriors -> the non-blank symbols some frame gives at least :data:`LIKELY`
    (an untrained model's flat output: its single likeliest one), in vocabulary order."""
    best = probs[:, 1:].max(axis=0)
    rows = [v + 1 for v in np.flatnonzero(best >= LIKELY)]
    return rows or [int(best.argmax()) + 1]


def _draw_posteriors(fig, blank_ax, chars_ax, view: ClipView) -> None:
    """P(blank) of each output frame as a line; the likely characters' as a heat map."""
    probs = np.exp(view.log_probs)  # (T', V)
    edges = np.arange(len(probs) + 1) * view.frame_shift
    blank_ax.stairs(probs[:, 0], edges, color="black", linewidth=0.8)
    blank_ax.set_ylim(0, 1.05)
    blank_ax.set_ylabel("P(blank)")
    rows = likely_characters(probs)
    image = chars_ax.imshow(
        probs[:, rows].T, aspect="auto", origin="lower", interpolation="nearest", cmap="Greys",
        vmin=0, vmax=1, extent=(0, edges[-1], -0.5, len(rows) - 0.5),
    )  # fmt: skip
    labels = ["space" if view.tokens[v] == " " else view.tokens[v] for v in rows]
    chars_ax.set_yticks(range(len(rows)), labels, fontsize=7)
    chars_ax.set_ylabel("P(character)")
    _colorbar(fig, chars_ax, image, "probability")


def _draw_words(ax, words) -> None:
    """Each word a box from its start to its end, coloured by confidence, on two alternating
    lanes so that the labels of short neighbours do not overlap."""
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    colours = colormaps["RdYlGn"]
    for i, word in enumerate(words):
        bottom = 0.52 if i % 2 else 0.04
        box = Rectangle((word.start, bottom), word.end - word.start, 0.44, alpha=0.8, gid="word")
        box.set(facecolor=colours(word.confidence), edgecolor="black", linewidth=0.5)
        ax.add_patch(box)
        ax.text((word.start + word.end) / 2, bottom + 0.22, word.text, ha="center", va="center",
                fontsize=8, gid="word")  # fmt: skip
    if not words:
        ax.text(0.5, 0.5, "(no words)", transform=ax.transAxes, ha="center", va="center", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_ylabel("words\n(colour:\nconfidence)", fontsize=8)


def _colorbar(fig, ax, mappable, label: str) -> None:
    """A colour bar in the right margin: it takes no width from ``ax``, so the panels keep one
    time axis."""
    bar = fig.colorbar(mappable, cax=ax.inset_axes((1.01, 0.0, 0.012, 1.0)))
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=7)


def plot_clip(
    model,
    audio,
    output,
    options: DecodingOptions | None = None,
    sample_rate: int | None = None,
    title: str | None = None,
) -> Path:
    """Draw :func:`clip_figure` of one clip (``title``: default the file's name) into ``output``."""
    view = look(model, audio, sample_rate, options)
    if title is None:
        title = Path(audio).name if isinstance(audio, str | Path) else ""
    return save_figure(clip_figure(view, title), output)


def read_metrics(folder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A Lightning CSVLogger folder's ``metrics.csv`` -> {column: (steps, values)}, each column
    with the rows that hold a value for it.

    Raises:
        ValueError: no metrics.csv in ``folder``, or the file has no ``step`` column.
    """
    folder = Path(folder)
    path = folder / "metrics.csv"
    if not path.is_file():
        found = [*folder.glob("*/metrics.csv"), *folder.glob("*/*/metrics.csv")]  # version_N, lightning_logs/
        runs = sorted(str(p.parent.relative_to(folder)) for p in found)
        hint = (
            f"; below it: {', '.join(runs[:5])}{', ...' if len(runs) > 5 else ''}: give one" if runs else ""
        )
        raise ValueError(f"{folder}: no metrics.csv (a CSVLogger folder, lightning_logs/version_N){hint}")
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        columns, rows = reader.fieldnames or [], list(reader)
    if "step" not in columns:
        raise ValueError(f"{path}: no 'step' column (its columns: {', '.join(columns) or 'none'})")
    metrics = {}
    for column in columns:
        if column in ("step", "epoch"):
            continue
        try:
            pairs = [(float(r["step"]), float(r[column])) for r in rows if r[column] and r["step"]]
        except ValueError as err:
            raise ValueError(f"{path}: column {column}: not a number ({err})") from None
        if pairs:
            steps, values = zip(*pairs, strict=True)
            metrics[column] = (np.array(steps), np.array(values))
    return metrics


def curves_figure(metrics: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "") -> "Figure":
    """Losses (train, val) above WER and CER in % (pooled: thick; per set: thin), against step."""
    losses = {c: xy for c, xy in metrics.items() if LOSS_COLUMN.fullmatch(c)}
    errors = {c: xy for c, xy in metrics.items() if ERROR_COLUMN.fullmatch(c)}
    if not losses and not errors:
        raise ValueError(f"{title or 'metrics.csv'}: no loss, WER or CER values to plot")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = _figure(CURVES_SIZE)
    loss_ax, error_ax = fig.subplots(2, 1, sharex=True)
    fig.subplots_adjust(left=0.09, right=0.78, top=0.93, bottom=0.08, hspace=0.1)
    for column, (steps, values) in sorted(losses.items()):
        val = column.startswith("val")
        loss_ax.plot(steps, values, label=column, marker="o" if val else None, markersize=3,
                     linewidth=1.5 if val else 0.7, alpha=1.0 if val else 0.6)  # fmt: skip
    if losses and min(v.min() for _, v in losses.values()) > 0:
        loss_ax.set_yscale("log")  # CTC loss falls by orders of magnitude early on
        loss_ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        loss_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.5, not 5 x 10^-1
        loss_ax.yaxis.set_minor_formatter(NullFormatter())
    loss_ax.set_ylabel("CTC loss")
    sets = sorted({ERROR_COLUMN.fullmatch(c).group(2) or "" for c in errors})
    colours = {name: f"C{i}" for i, name in enumerate(sets)}
    for column, (steps, values) in sorted(errors.items()):
        kind, name = ERROR_COLUMN.fullmatch(column).groups()
        error_ax.plot(steps, 100 * values, label=column, color=colours[name or ""], marker="o", markersize=3,
                      linestyle="-" if kind == "wer" else "--", linewidth=0.9 if name else 2.0)  # fmt: skip
    error_ax.set_ylabel("WER (solid), CER (dashed) %")
    error_ax.set_xlabel("step")
    for ax in (loss_ax, error_ax):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title, fontsize=10)
    return fig


def plot_metrics(folder, output) -> Path:
    """Draw :func:`curves_figure` of a Lightning CSVLogger folder into ``output``."""
    return save_figure(curves_figure(read_metrics(folder), str(folder)), output)


def wer_figure(rows: list[tuple[str, str, object]]) -> "Figure":
    """A bar per recognizer in each test set's group: WER % of (test set, recognizer,
    :class:`~asr.evaluation.Evaluation`) rows."""
    sets = list(dict.fromkeys(name for name, _, _ in rows))
    recognizers = list(dict.fromkeys(recognizer for _, recognizer, _ in rows))
    fig = _figure((max(6.0, 1.2 + 1.1 * len(sets) * len(recognizers) ** 0.5), 4.0))
    ax = fig.subplots()
    width = 0.8 / len(recognizers)
    for k, recognizer in enumerate(recognizers):
        found = {name: r.wer for name, rec, r in rows if rec == recognizer}
        x = [i + (k - (len(recognizers) - 1) / 2) * width for i, name in enumerate(sets) if name in found]
        bars = ax.bar(x, [100 * found[name] for name in sets if name in found], width, label=recognizer)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(sets)), sets)
    ax.set_ylabel("WER %")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def save_figure(fig: "Figure", output) -> Path:
    """Write ``fig`` to ``output`` at :data:`DPI` (PNG, or the format of its suffix), atomically."""
    output = Path(output)
    kind = output.suffix.lstrip(".").lower() or "png"
    if kind not in fig.canvas.get_supported_filetypes():
        raise ValueError(f"{output}: cannot write .{kind} pictures (use .png, .svg or .pdf)")
    return write_atomically(output, lambda partial: _save(fig, partial, kind))


def _save(fig: "Figure", path: Path, kind: str) -> None:
    """PNGs in 256 colours: a clip's picture has about 1,650, and the palette file is 64 KB
    instead of 156 KB with no difference to see (the report holds 20 of them)."""
    if kind != "png":
        fig.savefig(path, format=kind, dpi=DPI)
        return
    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    Image.open(buffer).convert("RGB").quantize(256).save(path, format="png", optimize=True)


def _figure(size: tuple[float, float]) -> "Figure":
    """A figure drawn by Agg, outside pyplot: nothing global to close, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig
