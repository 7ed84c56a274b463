"""ONNX export of a recognizer, and ONNX Runtime inference with the same transcription API.

    asr export exp/synth/checkpoints/best.ckpt model.onnx --format onnx   (or a model file)
    model = asr.load_model("model.onnx")     # runs in onnxruntime; model.transcribe(...) as usual

The ONNX file holds the whole network, front end included, so it needs neither torch nor
torchaudio to compute its logits; the model's configuration travels in its metadata.
"""

import copy
import json
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asr.audio import SAMPLE_RATE
from asr.decoding import read_beam_defaults
from asr.files import write_atomically
from asr.inference import transcribe as _transcribe
from asr.inference import transcribe_batch as _transcribe_batch
from asr.model import ModelConfig, ModelFileError, RecurrentCTC

ONNX_FORMAT = "asr-recurrent-ctc-onnx/1"  # the "format" metadata of every exported file
OPSET = 17
INPUTS, OUTPUTS = ("audio", "audio_lens"), ("logits", "lens")


class FourierMel(nn.Module):
    """torchaudio's ``MelSpectrogram(center=False)`` computed as a strided convolution with a
    windowed Fourier basis: the same numbers (to ~1e-6), in operations ONNX has. ONNX has no
    complex tensors, and ONNX Runtime's STFT operator runs ~10x slower than this convolution.
    """

    def __init__(self, mel):
        super().__init__()
        spec = mel.spectrogram
        n_fft, window = spec.n_fft, spec.window.double()
        bins = n_fft // 2 + 1
        angle = 2 * torch.pi * torch.outer(torch.arange(bins), torch.arange(n_fft)).double() / n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # (2 * bins, n_fft)
        self.register_buffer("basis", basis.float().unsqueeze(1))  # (2 * bins, 1, n_fft)
        self.register_buffer("fb", mel.mel_scale.fb.clone())  # (bins, F)
        self.hop_length, self.bins = spec.hop_length, bins

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, S) waveform -> (B, F, T) mel power spectrogram."""
        spec = nn.functional.conv1d(audio.unsqueeze(1), self.basis, stride=self.hop_length)  # (B, 2 bins, T)
        power = spec[:, : self.bins] ** 2 + spec[:, self.bins :] ** 2  # (B, bins, T)
        return torch.matmul(power.transpose(1, 2), self.fb).transpose(1, 2)


def export_onnx(model: RecurrentCTC, path) -> Path:
    """Write ``model`` as an ONNX graph (dynamic batch and length), atomically.

    Inputs ``audio`` (B, S) float32 16 kHz and ``audio_lens`` (B,) int64; outputs ``logits``
    (B, T, V) and ``lens`` (B,). Weights are kept in float32.
    """
    if model.config.proj_size:
        raise ValueError(
            "ONNX has no LSTM with a projection (model.net.proj_size); this model exports as .pt only"
        )
    net = copy.deepcopy(model).float().cpu().eval()
    net.frontend.mel = FourierMel(net.frontend.mel)
    # Two utterances of different lengths, so the graph keeps batch and length symbolic.
    example = (torch.zeros(2, SAMPLE_RATE), torch.tensor([SAMPLE_RATE, SAMPLE_RATE // 2]))
    axes = {"audio": {0: "B", 1: "S"}, "audio_lens": {0: "B"}, "logits": {0: "B", 1: "T"}, "lens": {0: "B"}}

    def write(partial: Path) -> None:
        import onnx

        with warnings.catch_warnings():  # the tracer's notes on Python scalars in the graph
            warnings.simplefilter("ignore")
            torch.onnx.export(net, example, str(partial), input_names=list(INPUTS),
                              output_names=list(OUTPUTS), dynamic_axes=axes, opset_version=OPSET,
                              dynamo=False)  # fmt: skip
        graph = onnx.load(str(partial))
        onnx.helper.set_model_props(
            graph, {"format": ONNX_FORMAT, "config": json.dumps(asdict(model.config))}
        )
        onnx.save(graph, str(partial))

    return write_atomically(path, write)


class OnnxModel:
    """A recognizer exported by :func:`export_onnx`, run by ONNX Runtime on the CPU.

    It offers what the transcription functions use of :class:`~asr.model.RecurrentCTC`:
    ``config``, ``beam_options``, a call ``(audio (B, S), audio_lens (B,)) -> (logits, lens)``,
    ``transcribe`` and ``transcribe_batch``. It cannot train or stream.
    """

    training = False
    device = torch.device("cpu")
    precision = "fp32"

    def __init__(self, session, config: ModelConfig):
        self.session, self.config = session, config
        self.beam_options = None
        self.min_samples = round(SAMPLE_RATE * config.win_ms / 1000)  # one analysis window

    def __call__(self, audio: torch.Tensor, audio_lens: torch.Tensor):
        if audio.shape[1] < self.min_samples:
            audio = nn.functional.pad(audio, (0, self.min_samples - audio.shape[1]))
        feed = {"audio": audio.float().numpy(), "audio_lens": audio_lens.numpy().astype(np.int64)}
        logits, lens = self.session.run(list(OUTPUTS), feed)
        return torch.from_numpy(logits), torch.from_numpy(lens)

    def eval(self) -> "OnnxModel":
        return self

    def train(self, mode: bool = True) -> "OnnxModel":
        if mode:
            raise RuntimeError("an ONNX model cannot be trained: train the checkpoint it was exported from")
        return self

    transcribe = _transcribe
    transcribe_batch = _transcribe_batch


def load_onnx(path) -> OnnxModel:
    """Open an ONNX file written by :func:`export_onnx`; its tuned beam search too, if any.

    Raises:
        ModelFileError: the file is missing, not ONNX, or not exported by this toolkit.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        import onnxruntime
    except ImportError:
        raise ModelFileError(f"{path}: ONNX models need onnxruntime: pip install 'asr[onnx]'") from None
    options = onnxruntime.SessionOptions()
    # Idle threads sleep instead of spinning: a beam search runs between two calls, and spinning
    # threads would take its core.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ModelFileError(f"{path}: not an ONNX model ({type(err).__name__})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if meta.get("format") != ONNX_FORMAT:
        raise ModelFileError(f"{path}: an ONNX model, but not one exported by 'asr export --format onnx'")
    model = OnnxModel(session, ModelConfig(**json.loads(meta["config"])))
    model.beam_options = read_beam_defaults(path)
    return model
