"""Fine-tuning helpers for the glomerulus classifier (seed 004 §3.4, §5): local ImageNet ResNet-50 weights into
:class:`~lesionlab.networks.nets.SEResNet50Improved`, and freezing a fraction of the network from the input side.
Nothing is downloaded: weights come from a file the user provides.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from lesionlab.errors import DataError

__all__ = ["freeze_fraction", "load_resnet50_weights", "finetune_setup"]

_BN = ("weight", "bias", "running_mean", "running_var")


def freeze_fraction(network: nn.Module, fraction: float, head_prefixes: tuple[str, ...] = ("head", "fc",
                    "last_linear", "classifier")) -> nn.Module:
    """Freeze the first ``fraction`` of the backbone's parameter tensors, counted from the input side.

    Seed 004 §3.4/§5 tunes the share of frozen ImageNet weights over {100, 75, 25, 0} % without defining it (§9.2);
    here it is the share of parameter tensors in registration order (stem first), excluding the classifier head
    (parameters whose name starts with one of ``head_prefixes``), which always trains. 1.0 therefore trains only the
    head; 0.0 fine-tunes everything (the paper's best setting). Returns ``network`` for use in configs.

    Raises:
        ValueError: ``fraction`` outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}.")
    backbone = [(n, p) for n, p in network.named_parameters() if not n.startswith(head_prefixes)]
    n_frozen = int(round(fraction * len(backbone)))
    for i, (_, p) in enumerate(backbone):
        p.requires_grad_(i >= n_frozen)
    return network


def _resnet50_mapping(network: nn.Module, src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Target key -> tensor for the parts of a ResNet-50 state dict (torchvision / MONAI ``ResNet`` names) that fit."""
    out: dict[str, torch.Tensor] = {}

    def conv_bn(dst: str, conv: str, bn: str | None) -> None:
        out[f"{dst}.conv.weight"] = src[f"{conv}.weight"]
        if bn is not None:
            out.update({f"{dst}.adn.N.{k}": src[f"{bn}.{k}"] for k in _BN})

    conv_bn("stem.0", "conv1", "bn1")
    reading = getattr(network.stages[0][0], "reading", None)
    for i, stage in enumerate(network.stages):
        for j in range(len(stage)):
            pre = f"layer{i + 1}.{j}"
            if f"{pre}.conv1.weight" not in src:
                continue
            branch = f"stages.{i}.{j}.branch"
            if reading in ("A", "B"):
                conv_bn(f"{branch}.0", f"{pre}.conv1", f"{pre}.bn1")
                w3 = src[f"{pre}.conv2.weight"]  # (width, width, 3, 3): centre row -> 1x3, centre column -> 3x1
                for p in range(1 if reading == "B" else 2):
                    out[f"{branch}.{1 + p}.0.conv.weight"] = w3[:, :, 1:2, :].clone()
                    out[f"{branch}.{1 + p}.1.conv.weight"] = w3[:, :, :, 1:2].clone()
                out.update({f"{branch}.1.1.adn.N.{k}": src[f"{pre}.bn2.{k}"] for k in _BN})
                conv_bn(f"{branch}.{2 if reading == 'B' else 3}", f"{pre}.conv3", f"{pre}.bn3")
            if f"{pre}.downsample.0.weight" in src:
                conv_bn(f"stages.{i}.{j}.shortcut", f"{pre}.downsample.0", f"{pre}.downsample.1")
    return out


def load_resnet50_weights(network: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Load local ImageNet ResNet-50 weights into an ``SEResNet50Improved`` where the shapes fit (seed 004 §9.2).

    The file is a state dict with torchvision/MONAI ``ResNet`` key names (``conv1``, ``bn1``, ``layerI.J.convK``,
    ``downsample``; optionally under ``"model"`` or ``"state_dict"``). Stem, 1x1 convolutions, norms and projection
    shortcuts load as they are; each 3x3 kernel gives its centre row to the 1x3 and its centre column to the 3x1
    convolution (readings A and B). SE layers and the classifier keep their initialisation; reading C (no 1x1
    convolutions, other widths) takes the stem only. Nothing is downloaded.

    Returns:
        ``{"loaded": n, "skipped": [keys whose shape did not fit]}``.

    Raises:
        DataError: the file cannot be read or holds no ResNet-50 keys.
    """
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any failure: the file is not usable weights
        raise DataError(path, f"cannot read weights ({type(err).__name__}: {err})") from err
    for key in ("model", "state_dict"):
        if isinstance(src, dict) and isinstance(src.get(key), dict):
            src = src[key]
    src = {k.removeprefix("module."): v for k, v in src.items()} if isinstance(src, dict) else {}
    if "conv1.weight" not in src:
        raise DataError(path, "not a ResNet-50 state dict (no 'conv1.weight')")
    own = network.state_dict()
    wanted = _resnet50_mapping(network, src)
    fits = {k: v for k, v in wanted.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    network.load_state_dict(fits, strict=False)
    return {"loaded": len(fits), "skipped": sorted(set(wanted) - set(fits))}


def finetune_setup(network: nn.Module, pretrained: str | None = None, freeze: float = 0.0) -> nn.Module:
    """Bundle helper: optionally load local ResNet-50 weights, then freeze ``freeze`` of the network; returns it."""
    if pretrained:
        load_resnet50_weights(network, pretrained)
    return freeze_fraction(network, freeze)


def trainable_parameters(network: nn.Module) -> list[nn.Parameter]:
    """The parameters the optimiser updates: those not frozen by :func:`freeze_fraction` (``requires_grad``)."""
    return [p for p in network.parameters() if p.requires_grad]
