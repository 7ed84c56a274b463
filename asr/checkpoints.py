"""Training checkpoints and model files, without Lightning: the network of a checkpoint,
export to a model file, averaging several, and the weights a run starts from (``init_from``).

A checkpoint is read with ``torch.load(weights_only=True)``: tensors and plain values, and the
config classes allowed below, never code.
"""

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from asr.charlm import CharLM, CharLMConfig, save_charlm
from asr.features import Augment
from asr.model import ModelConfig, ModelFileError, RecurrentCTC, is_model_file, load_model, save_model

# Checkpoints of runs built in Python (not through `asr fit`, which stores plain dicts) hold
# these in their hyperparameters: torch.load(weights_only=True) may rebuild them, nothing else.
torch.serialization.add_safe_globals([ModelConfig, Augment, CharLMConfig])


def network_of(checkpoint, config_class, network_class) -> nn.Module:
    """The network (``net.*`` weights) of a training checkpoint, rebuilt from its hyperparameters."""
    if not Path(checkpoint).is_file():
        raise ModelFileError(f"{checkpoint}: no such checkpoint")
    try:
        # weights_only: tensors and plain values (and the config classes allowed above), never code.
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelFileError(
            f"{checkpoint}: not a training checkpoint, or one holding more than weights and settings "
            f"({type(err).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{checkpoint}: not a training checkpoint (no state_dict)")
    config = ckpt.get("hyper_parameters", {}).get("net") or config_class()
    # LightningCLI stores the dataclass argument as a plain dict.
    net = network_class(config_class(**config) if isinstance(config, dict) else config)
    net.load_state_dict(
        {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    )
    return net


def export_checkpoint(checkpoint, output, format: str = "pt") -> RecurrentCTC:
    """Write the recognizer of a training checkpoint (or of a model file) to a self-contained
    model file (``format`` "pt") or ONNX graph ("onnx")."""
    return export(recognizer_of(checkpoint), checkpoint, output, format)


def export(net: RecurrentCTC, source, output, format: str = "pt") -> RecurrentCTC:
    """Write ``net`` (from ``source``, named in errors) as a model file or ONNX graph."""
    if not net.frontend.has_stats:
        raise ValueError(f"{source}: the feature statistics were never computed (was it trained?)")
    if format == "onnx":
        from asr.onnx import export_onnx

        export_onnx(net, output)
    else:
        save_model(net, output)
    return net


def export_charlm(checkpoint, output) -> CharLM:
    """Write the language model of a :class:`CharLMTraining` checkpoint to an LM file."""
    net = network_of(checkpoint, CharLMConfig, CharLM)
    save_charlm(net, output)
    return net


def initial_weights(path, config: ModelConfig) -> dict[str, torch.Tensor]:
    """The network weights and feature statistics of a model file or training checkpoint, for
    a network built from ``config``.

    A unidirectional network may start from a bidirectional one of the same sizes: it takes
    the forward direction (a causal model already: its RNNs, the forward half of each layer's
    output in the next layer's input, LayerNorm and output layer), and the backward direction
    is left out. Feature statistics are kept only under the same ``feature_norm`` (otherwise
    the run fits its own).

    Raises:
        ValueError: ``path`` is neither, or its network differs from ``config`` (every
            differing setting is named; dropout and feature_norm may differ, and
            bidirectional from true there to false here).
    """
    if is_model_file(path):
        net = load_model(path)
    else:
        try:
            net = network_of(path, ModelConfig, RecurrentCTC)
        except (ModelFileError, RuntimeError) as err:  # unreadable, or weights of another network
            reason = str(err).removeprefix(f"{path}: ")
            message = f"init_from {path}: not a model file or training checkpoint ({reason})"
            raise ValueError(message) from None
    theirs, ours = asdict(net.config), asdict(config)
    # Dropout has no weights, statistics can be fitted again, and a forward direction alone is
    # a unidirectional network.
    free = {"dropout", "feature_norm"} | ({"bidirectional"} if theirs["bidirectional"] else set())
    differ = [
        f"{k}: {theirs[k]!r} there, {ours[k]!r} here" for k in ours if k not in free and theirs[k] != ours[k]
    ]
    if differ:
        raise ValueError(f"init_from {path}: its network differs from model.net ({'; '.join(differ)})")
    weights = net.state_dict()
    if theirs["feature_norm"] != ours["feature_norm"]:  # statistics as unfitted: the run fits its own
        weights |= {
            "frontend.mean": torch.zeros_like(weights["frontend.mean"]),
            "frontend.std": torch.ones_like(weights["frontend.std"]),
            "frontend.frames_seen": torch.zeros_like(weights["frontend.frames_seen"]),
        }
    if theirs["bidirectional"] and not ours["bidirectional"]:
        weights = _forward_direction(weights, ours["proj_size"] or ours["hidden_size"])
    return weights


def _forward_direction(weights: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """A bidirectional network's weights cut to its forward direction: each layer's output is
    [forward, backward] (``size`` each), so every weight or norm that reads or makes one keeps
    its first ``size`` columns or entries."""
    forward = {}
    for key, value in weights.items():
        if ".backward_rnn." in key:
            continue
        if (
            key.startswith("norms.")
            or key == "head.weight"
            or (".forward_rnn.weight_ih" in key and not key.startswith("layers.0."))
        ):
            value = value[..., :size]
        forward[key] = value
    return forward


def recognizer_of(path) -> RecurrentCTC:
    """The recognizer of a model file or a training checkpoint."""
    return load_model(path) if is_model_file(path) else network_of(path, ModelConfig, RecurrentCTC)


def average(paths: list) -> RecurrentCTC:
    """One recognizer whose weights and feature statistics are the mean of those of ``paths``
    (model files or checkpoints of one network, e.g. the last checkpoints of a run: their
    average usually scores a little better than any one of them).

    Raises:
        ValueError: fewer than one path, or networks that differ (the settings are named).
    """
    if not paths:
        raise ValueError("nothing to average: give model files or checkpoints")
    nets = [recognizer_of(path) for path in paths]
    first = asdict(nets[0].config)
    for path, net in zip(paths[1:], nets[1:], strict=True):
        differ = [f"{k}: {first[k]!r} in {paths[0]}, {v!r} here" for k, v in asdict(net.config).items()
                  if k != "dropout" and v != first[k]]  # fmt: skip
        if differ:
            raise ValueError(f"{path}: not the network of the others ({'; '.join(differ)})")
    states = [net.state_dict() for net in nets]
    averaged = {
        name: torch.stack([s[name].double() for s in states]).mean(0).to(value.dtype)
        if value.is_floating_point()
        else max(s[name] for s in states)  # frames_seen: the statistics' frame count
        for name, value in states[-1].items()
    }
    nets[-1].load_state_dict(averaged)
    return nets[-1]
