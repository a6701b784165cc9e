"""Model complexity: parameters, ``thop``-style multiply-accumulates and PyTorch's FLOP count.

Published complexity figures for segmentation networks are not comparable unless the counting convention is known.
Two conventions are provided:

**thop style** (:func:`count_macs_thop_style`), re-implemented here (``thop`` is not a dependency). Forward hooks on
leaf modules count multiply-accumulates (MACs) per call, the way the ``thop`` package (Lyken17/pytorch-OpCounter)
does. Convolutions and transposed convolutions use the same formula, evaluated on the *output* tensor::

    MACs(conv) = output.numel() * (in_channels / groups) * prod(kernel_size)   [+ output.numel() if bias, "legacy"]

so a stride-2 transposed convolution is counted per output pixel (4x the PyTorch count in 2D). Functional operations
(``torch.cat``, ``+``, ``x * w``, ``F.relu``) are invisible to module hooks and count zero, as in ``thop``.

Two revisions of ``thop`` differ in two rows; ``convention`` selects one:

- Conv / ConvTranspose Nd: the formula above; ``"legacy"`` (thop <= 0.0.31, 2019-20) adds one operation per output
  element when the layer has a bias, ``"current"`` (thop >= 0.1) does not;
- BatchNorm / InstanceNorm / LayerNorm: ``2 * numel`` in ``"legacy"``; ``2 * numel``, doubled for affine layers, in
  ``"current"``.

The other rows are the same in both:

- Linear: ``in_features * output.numel()``;
- AvgPool: ``output.numel()``; AdaptiveAvgPool: ``(prod(input_size // output_size) + 1) * output.numel()``;
- Upsample: ``output.numel()`` x 1 (nearest), 5 (linear), 11 (bilinear), 259 (bicubic), 0 otherwise;
- Softmax: ``rows * (3 n - 1)``; LeakyReLU, PReLU: ``numel``;
- ReLU, ReLU6, MaxPool, AdaptiveMaxPool, Dropout, padding and every module thop does not know (e.g. Sigmoid): 0.

``convs_only=True`` (the default) keeps only the convolution rows. The seed-002 spec (Appendix A) compares the
thesis's D-UNet figure with "thop-style MACs, conv layers only": for D-UNet on 1 x 4 x 192 x 192 that is
18,046,607,616 with the legacy bias term (18,022,072,320 without). Legacy convolutions + BatchNorm + Linear sum to
18,089,374,976, the thesis's Table 4.3 figure to the unit; ``convs_only=False`` gives 1,769,856 more, thop's count for
the four squeeze-excitation ``nn.AdaptiveAvgPool2d`` modules, which the thesis's measurement did not count (its SE
presumably pooled functionally).

**PyTorch** (:func:`count_flops_torch`): ``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs = 2 x MACs of
matrix products and convolutions only (no bias, normalisation, activation or pooling), and counts a transposed
convolution per *input* pixel, i.e. the multiplications actually performed. For D-UNet on 1 x 4 x 192 x 192 it gives
31,967,291,392 FLOPs (15.98 G MACs).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, Union

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["THOP_CONVENTIONS", "count_parameters", "count_macs_thop_style", "count_flops_torch", "complexity_table"]

#: accepted values of ``convention`` in :func:`count_macs_thop_style`
THOP_CONVENTIONS = ("legacy", "current")

_ShapeLike = Union[Sequence[int], Sequence[Sequence[int]]]
# output.numel() multipliers of thop's ``count_upsample``; other modes (e.g. trilinear) count zero in thop
_UPSAMPLE_OPS = {"nearest": 1, "linear": 5, "bilinear": 11, "bicubic": 224 + 35}


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameter elements (only those with ``requires_grad`` unless ``trainable_only=False``).

    Batch-norm running statistics are buffers, not parameters, so a BatchNorm layer counts ``2 * channels``; this is
    the convention of the thesis's Table 4.3 (D-UNet: 9,503,779).
    """
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _prepare(
    model: nn.Module, input_shape: _ShapeLike, device: str | torch.device | None
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The module to run (``model`` itself, or a copy on ``device``) and seeded inputs on its device."""
    if device is not None and torch.device(device) != _model_device(model):
        # a copy, so that counting on e.g. the meta device (shapes only, no arithmetic) leaves the model untouched
        model = copy.deepcopy(model).to(device)
    target = _model_device(model)
    multi = len(input_shape) > 0 and isinstance(input_shape[0], (Sequence, torch.Size))
    shapes = list(input_shape) if multi else [input_shape]
    gen = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(tuple(int(s) for s in shape), generator=gen).to(target) for shape in shapes)
    return model, inputs


def _run_eval(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(*inputs)
    finally:
        model.train(was_training)


def _conv_macs(m: _ConvNd, x: torch.Tensor, y: torch.Tensor, convention: str) -> int:
    per_output = (x.shape[1] // m.groups) * math.prod(m.kernel_size)
    if convention == "legacy" and m.bias is not None:
        per_output += 1  # thop <= 0.0.31 adds one operation per output element for the bias
    return y.numel() * per_output


def _other_macs(m: nn.Module, x: torch.Tensor, y: torch.Tensor, convention: str) -> int:
    """thop's count for the non-convolution leaf modules it knows; 0 for everything else."""
    if isinstance(m, (_BatchNorm, _InstanceNorm, nn.LayerNorm)):
        ops = 2 * x.numel()
        affine = bool(getattr(m, "affine", False) or getattr(m, "elementwise_affine", False))
        return 2 * ops if convention == "current" and affine else ops
    if isinstance(m, nn.Linear):
        return m.in_features * y.numel()
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        return y.numel()
    if isinstance(m, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        window = math.prod(i // o for i, o in zip(x.shape[2:], y.shape[2:]))
        return (window + 1) * y.numel()
    if isinstance(m, nn.Upsample):  # includes UpsamplingNearest2d / UpsamplingBilinear2d
        return _UPSAMPLE_OPS.get(str(m.mode), 0) * y.numel()
    if isinstance(m, nn.Softmax):
        n = x.shape[m.dim if m.dim is not None else -1]
        return (x.numel() // n) * (3 * n - 1)  # exp, add, divide per feature
    if isinstance(m, (nn.LeakyReLU, nn.PReLU)):
        return x.numel()
    return 0  # ReLU, ReLU6, MaxPool, AdaptiveMaxPool, Dropout, padding, Sigmoid, ... count zero in thop


def count_macs_thop_style(
    model: nn.Module,
    input_shape: _ShapeLike,
    convs_only: bool = True,
    convention: str = "legacy",
    device: str | torch.device | None = None,
) -> int:
    """Multiply-accumulates counted the way the ``thop`` package does (see the module docstring for the table).

    The model runs once in eval mode without gradients; forward hooks on its leaf modules count every call; the
    hooks are removed and the training flag restored afterwards.

    Args:
        model: the network.
        input_shape: input shape including the batch size (the count scales with it), or one shape per positional
            input.
        convs_only: count only ``Conv{1,2,3}d`` and ``ConvTranspose{1,2,3}d`` (the thesis's convention). Defaults
            to True.
        convention: ``"legacy"`` (thop <= 0.0.31: conv bias counted, norm ``2 * numel``) or ``"current"``
            (thop >= 0.1: no bias term, affine norm ``4 * numel``). Defaults to ``"legacy"``, the revision whose
            numbers the thesis reports.
        device: run on this device, on a copy of the model when it differs from the model's; ``"meta"`` counts from
            shapes alone without any arithmetic. Defaults to the model's device.

    Returns:
        the MAC count, an integer.
    """
    if convention not in THOP_CONVENTIONS:
        raise ValueError(f"convention must be one of {THOP_CONVENTIONS}, got {convention!r}.")
    model, inputs = _prepare(model, input_shape, device)
    total = [0]

    def hook(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        if not args or not isinstance(args[0], torch.Tensor) or not isinstance(out, torch.Tensor):
            return
        if isinstance(m, _ConvNd):
            total[0] += _conv_macs(m, args[0], out, convention)
        elif not convs_only:
            total[0] += _other_macs(m, args[0], out, convention)

    handles = [m.register_forward_hook(hook) for m in model.modules() if next(m.children(), None) is None]
    try:
        _run_eval(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return int(total[0])


def count_flops_torch(model: nn.Module, input_shape: _ShapeLike, device: str | torch.device | None = None) -> int:
    """Total FLOPs reported by ``torch.utils.flop_counter.FlopCounterMode`` for one eval-mode forward.

    Conventions of PyTorch's counter: FLOPs = 2 x MACs; only matrix products and convolutions are counted (no bias,
    normalisation, activation or pooling); a transposed convolution is counted per *input* pixel,
    ``input_spatial * batch * prod(weight.shape)``, i.e. the multiplications actually performed.

    Args:
        model: the network.
        input_shape: input shape including the batch size, or one shape per positional input.
        device: as in :func:`count_macs_thop_style`.

    Returns:
        the FLOP count (divide by 2 for MACs).
    """
    model, inputs = _prepare(model, input_shape, device)
    with FlopCounterMode(display=False) as counter:
        _run_eval(model, inputs)
    return int(counter.get_total_flops())


def complexity_table(
    models: dict[str, nn.Module], input_shape: _ShapeLike, device: str | torch.device | None = None
) -> list[dict[str, Any]]:
    """Parameters and operation counts of several models on the same input, one row per model.

    Each row has ``model`` (the dict key), ``params`` (trainable), ``macs_thop`` (legacy thop style, convolutions
    only, the thesis's convention), ``macs_thop_all`` (legacy thop style, every layer thop counts), ``flops_torch``
    and ``macs_torch`` (``flops_torch // 2``).

    Args:
        models: networks by display name.
        input_shape: input shape including the batch size, or one shape per positional input.
        device: as in :func:`count_macs_thop_style`.

    Returns:
        the rows, in the order of ``models``.
    """
    rows: list[dict[str, Any]] = []
    for name, model in models.items():
        flops = count_flops_torch(model, input_shape, device=device)
        rows.append(
            {
                "model": name,
                "params": count_parameters(model),
                "macs_thop": count_macs_thop_style(model, input_shape, convs_only=True, device=device),
                "macs_thop_all": count_macs_thop_style(model, input_shape, convs_only=False, device=device),
                "flops_torch": flops,
                "macs_torch": flops // 2,
            }
        )
    return rows

