"""The recognizer network: log-mel front end -> conv subsampling -> stacked RNN -> CTC head.

A plain ``nn.Module`` (no Lightning), so inference needs only torch. Shapes: B batch,
S audio samples, T frames, F mel bins, H hidden units, V vocabulary (with the blank).
"""

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from asr.audio import SAMPLE_RATE
from asr.decoding import DecodingOptions, read_beam_defaults
from asr.features import LogMel, _length_mask
from asr.files import write_atomically
from asr.inference import transcribe as _transcribe
from asr.inference import transcribe_batch as _transcribe_batch
from asr.streaming import Stream
from asr.text import DEFAULT_ALPHABET, CharTokenizer

RNN_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
# ModelConfig.feature_norm -> LogMel's per-utterance normalisation
FEATURE_NORMS = {"global": None, "utterance": "mean", "utterance_mvn": "meanvar"}


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved inside every model file."""

    n_mels: int = 80  # mel bins per 10 ms frame
    win_ms: float = 25.0  # analysis window
    hop_ms: float = 10.0  # frame shift
    # global | utterance | utterance_mvn: whose mean (and, with mvn, variance) the log-mel frames lose
    feature_norm: str = "global"
    subsampling: int = 2  # time subsampling of the conv front end: 1, 2, 3 or 4
    conv_channels: int = 256  # width of the conv front end
    rnn_type: str = "lstm"  # lstm | gru | rnn (tanh)
    hidden_size: int = 256  # units per direction
    proj_size: int = 0  # LSTM only: > 0 projects each direction's recurrent output to this size (LSTMP)
    num_layers: int = 3
    bidirectional: bool = True  # False for streaming
    dropout: float = 0.1  # between layers
    alphabet: str = DEFAULT_ALPHABET  # output characters; the blank is added as id 0

    def __post_init__(self):
        if self.subsampling not in (1, 2, 3, 4):
            raise ValueError(f"subsampling must be 1, 2, 3 or 4, got {self.subsampling}")
        if self.feature_norm not in FEATURE_NORMS:
            raise ValueError(
                f"feature_norm must be one of {', '.join(FEATURE_NORMS)}, got {self.feature_norm!r}"
            )
        if self.rnn_type not in RNN_TYPES:
            raise ValueError(f"rnn_type must be one of {sorted(RNN_TYPES)}, got {self.rnn_type!r}")
        if self.proj_size and (self.rnn_type != "lstm" or not 0 < self.proj_size < self.hidden_size):
            raise ValueError(
                f"proj_size needs rnn_type lstm and 0 < proj_size < hidden_size ({self.hidden_size}), "
                f"got {self.proj_size} with {self.rnn_type}"
            )

    @property
    def frame_shift(self) -> float:
        """Seconds between two output frames."""
        return self.hop_ms / 1000 * self.subsampling


class ConvSubsampling(nn.Module):
    """Two 1-D convolutions over time; the second has stride ``factor``.

    (B, T, F) -> (B, ceil(T / factor), C). A 1-D conv over mel channels costs a fraction of
    the 2-D convs of DeepSpeech2 while giving the RNN the same shorter sequence.
    """

    def __init__(self, in_dim: int, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        kernel = 2 * factor + 1 if factor > 1 else 3
        self.conv1 = nn.Conv1d(in_dim, channels, kernel_size=5, padding=2)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=kernel, stride=factor, padding=kernel // 2)
        self.norm1 = nn.LayerNorm(channels)
        self.norm2 = nn.LayerNorm(channels)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return torch.div(lengths + self.factor - 1, self.factor, rounding_mode="floor")

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        x = nn.functional.gelu(self.norm1(self.conv1(x.transpose(1, 2)).transpose(1, 2)))
        x = x * _length_mask(lengths, x.shape[1]).unsqueeze(-1)  # no leak from padding
        x = nn.functional.gelu(self.norm2(self.conv2(x.transpose(1, 2)).transpose(1, 2)))
        lengths = self.output_lengths(lengths)
        return x * _length_mask(lengths, x.shape[1]).unsqueeze(-1), lengths


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of (B, T, D) within its own length; padding stays at the end."""
    t = torch.arange(x.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    idx = torch.where(t < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - t, t)  # (B, T)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


class RecurrentLayer(nn.Module):
    """One (bi)directional RNN layer on padded tensors, exact for every sequence length.

    The backward direction runs on each sequence reversed within its length, so it starts
    at the last real frame rather than at the padding: results do not depend on how an
    utterance was batched, and the fast padded oneDNN kernel is kept (packing is 1.6-5x
    slower on CPU).
    """

    def __init__(
        self, rnn_type: str, input_size: int, hidden_size: int, bidirectional: bool, proj_size: int = 0
    ):
        super().__init__()
        rnn = RNN_TYPES[rnn_type]
        options = {"proj_size": proj_size} if proj_size else {}
        self.forward_rnn = rnn(input_size, hidden_size, batch_first=True, **options)
        self.backward_rnn = (
            rnn(input_size, hidden_size, batch_first=True, **options) if bidirectional else None
        )

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D_in) -> (B, T, H) or (B, T, 2H) when bidirectional (H: the projection's size
        with LSTMP)."""
        out, _ = self.forward_rnn(x)
        if self.backward_rnn is None:
            return out
        back, _ = self.backward_rnn(reverse_padded(x, lengths))
        return torch.cat([out, reverse_padded(back, lengths)], dim=-1)


class RecurrentCTC(nn.Module):
    """Waveform in, per-frame character log-probabilities out."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tokenizer = CharTokenizer(config.alphabet)
        self.frontend = LogMel(
            config.n_mels, config.win_ms, config.hop_ms, utterance_norm=FEATURE_NORMS[config.feature_norm]
        )
        self.subsample = ConvSubsampling(config.n_mels, config.conv_channels, config.subsampling)
        directions = 2 if config.bidirectional else 1
        out_size = config.proj_size or config.hidden_size
        sizes = [config.conv_channels] + [directions * out_size] * config.num_layers
        self.layers = nn.ModuleList(
            RecurrentLayer(
                config.rnn_type, sizes[i], config.hidden_size, config.bidirectional, config.proj_size
            )
            for i in range(config.num_layers)
        )
        # LayerNorm + dropout after each layer: keeps deep stacks trainable at high LR.
        self.norms = nn.ModuleList(nn.LayerNorm(size) for size in sizes[1:])
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(sizes[-1], len(self.tokenizer))
        # The beam search (LM, weights) tuned for this model; load_model reads it.
        self.beam_options: DecodingOptions | None = None
        # "bf16": transcription runs under bfloat16 autocast (load_model(precision=...)).
        self.precision = "fp32"

    @property
    def device(self) -> torch.device:
        # A buffer, not a weight: dynamically quantized layers keep their weights packed.
        return self.frontend.mean.device

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor):
        """(B, S) waveform at 16 kHz, (B,) sample counts -> (B, T, V) logits, (B,) frame counts."""
        feats, lens = self.frontend(audio, audio_lens)
        x, lens = self.subsample(feats, lens)
        for layer, norm in zip(self.layers, self.norms, strict=True):
            x = self.dropout(norm(layer(x, lens)))
        return self.head(x), lens

    transcribe = _transcribe
    transcribe_batch = _transcribe_batch

    def stream(
        self,
        sample_rate: int = SAMPLE_RATE,
        options: DecodingOptions | None = None,
        pause: float | None = 0.8,
    ) -> Stream:
        """Recognize speech chunk by chunk (unidirectional models): see :mod:`asr.streaming`."""
        return Stream(self, sample_rate, options, pause)


MODEL_FORMAT = "asr-recurrent-ctc/1"  # the "format" key of every model file
# The English models shipped with the package (trained on the synth recipe): the default
# (bidirectional), and "streaming" (unidirectional), named by ``load_model("streaming")``.
MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = MODELS_DIR / "default.pt"
SHIPPED_MODELS = ("default", "streaming")


def save_network(model: nn.Module, fmt: str, path) -> Path:
    """Write a network with a ``config`` dataclass to one self-describing file, atomically.

    The file holds ``fmt``, the config as a dict and the state dict: plain types and tensors.
    It is written beside ``path`` and renamed over it, so an interrupted save never leaves a
    half-written file where a good one was. Weights are stored as float16, which halves the
    file; :func:`load_network` loads them into float32. Buffers (normalisation statistics)
    keep their type.
    """
    weights = {name for name, _ in model.named_parameters()}
    state = {name: t.half() if name in weights else t for name, t in model.state_dict().items()}
    package = {"format": fmt, "config": asdict(model.config), "state_dict": state}
    return write_atomically(path, lambda partial: torch.save(package, partial))


class ModelFileError(ValueError):
    """A model file that is missing, damaged, or not one of ours."""


def load_network(path, fmt: str, build, kind: str, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network of a file written by :func:`save_network` with format ``fmt``.

    Args:
        build: config dict -> network (e.g. ``lambda c: RecurrentCTC(ModelConfig(**c))``).
        kind: what the file should be, for error messages ("model file", "character LM file").

    Raises:
        ModelFileError: the file is missing, not a torch file, of another format, or of
            another version of the network; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such {kind}")
    try:
        # weights_only: a model file holds tensors and plain types, never code to run.
        package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelFileError(f"{path}: not a {kind} of this toolkit ({type(err).__name__})") from None
    if not isinstance(package, dict) or package.get("format") != fmt:
        found = package.get("format") if isinstance(package, dict) else None
        checkpoint = isinstance(package, dict) and "state_dict" in package and not found
        hint = f" (its format is {found!r})" if found else ""
        hint += " (a training checkpoint? run 'asr export CKPT OUT' first)" if checkpoint else ""
        raise ModelFileError(f"{path}: not a {kind} of this toolkit{hint}")
    try:
        model = build(package["config"])
        model.load_state_dict(package["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{path}: {kind} does not match this version ({err})") from None
    return model.to(device).eval()


def is_model_file(path) -> bool:
    """Whether ``path`` is a model file written by :func:`save_model` (not, e.g., a checkpoint)."""
    try:
        package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # missing, not a torch file, or pickled objects (a training checkpoint)
        return False
    return isinstance(package, dict) and package.get("format") == MODEL_FORMAT


def save_model(model: RecurrentCTC, path) -> Path:
    """Write a recognizer (config, float16 weights, feature statistics) to one file, atomically."""
    return save_network(model, MODEL_FORMAT, path)


PRECISIONS = ("fp32", "bf16")


def load_model(path=None, device: str | torch.device = "cpu", precision: str = "fp32") -> RecurrentCTC:
    """Load a model file written by :func:`save_model` (``asr export``), ready for inference.

    Without ``path``, the English model shipped with the package (:data:`DEFAULT_MODEL`);
    a shipped model's name (``"default"``, ``"streaming"``) loads that one, unless a file of that
    name is in the working folder.
    ``model.beam_options`` is the beam search tuned for it (``<model>.decoding.json``, written
    by ``asr lm tune --save``; the shipped model has one with its n-gram LM), or None.
    ``device``: "cpu", "cuda", "cuda:N", or "auto" (a GPU when there is one).
    ``precision="bf16"`` runs the network under bfloat16 autocast, for GPUs and CPUs with
    native bf16 (avx512_bf16, AMX); on the 2-core build machine greedy transcription is only
    2-11 % faster than fp32, at the same WER (``make bench``); elsewhere bf16 is emulated and
    slower, and a warning says so. A ``.onnx`` file (``asr export
    --format onnx``) gives an :class:`asr.onnx.OnnxModel`, run by ONNX Runtime in fp32, with the
    same ``transcribe`` API.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = resolve_device(device)
    if path is not None and str(path) in SHIPPED_MODELS and not Path(path).exists():
        path = MODELS_DIR / f"{path}.pt"
        if not path.is_file():
            raise ModelFileError(f"{path}: this installation has no {path.stem!r} model")
    if path is not None and Path(path).suffix == ".onnx":
        from asr.onnx import load_onnx

        if precision != "fp32":
            raise ValueError(f"{path}: an ONNX model runs in fp32 only")
        return load_onnx(path)
    if path is None and not DEFAULT_MODEL.is_file():
        raise ModelFileError(
            f"no model file given, and this installation has no default model ({DEFAULT_MODEL}): "
            "train one (make train RECIPE=smoke) and pass it with --model"
        )
    build = lambda config: RecurrentCTC(ModelConfig(**config))  # noqa: E731
    model = load_network(path or DEFAULT_MODEL, MODEL_FORMAT, build, "model file", device)
    model.beam_options = read_beam_defaults(path or DEFAULT_MODEL)
    model.precision = precision
    if precision == "bf16" and model.device.type == "cpu" and not native_bf16_cpu():
        warnings.warn(
            "precision='bf16' on a CPU without native bf16 (AVX-512 or Arm BF16) is emulated: "
            "transcription ran 7x slower than in fp32 on such a CPU (AVX2); use fp32",
            stacklevel=2,
        )
    return model


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` (a GPU when there is one, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...;
    a device this machine does not have is a one-line error, not a CUDA traceback."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA devices")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device}: only cpu and cuda are supported")
    return device


def native_bf16_cpu() -> bool:
    """Whether oneDNN runs bf16 on this CPU natively (AVX-512 or Arm BF16), not emulated."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
