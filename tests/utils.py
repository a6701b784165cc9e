"""Shared checks for network and block tests (style_anchors.md §5.2 rule 10, §5.3).

Every network and block is tested along four axes; the first three are written here once:

- :func:`check_shape` (eval mode, no grad),
- :func:`check_backward` (train mode, every trainable parameter gets a finite gradient),
- :func:`check_torchscript` (script, save, load, compare) and :func:`check_export` (``torch.export``),

plus :func:`count_parameters`. Invalid-argument checks are plain ``assertRaises`` in each test file.

``input_shape`` is either one shape, e.g. ``(2, 4, 32, 32)``, or a sequence of shapes for a module with several
positional inputs, e.g. ``((1, 16, 2, 8, 8), (1, 16, 8, 8))``. Inputs are drawn from a seeded generator, so a check is
reproducible. The helpers raise ``AssertionError`` with a message, which both ``unittest`` and ``pytest`` report.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Union

import torch
import torch.nn as nn

__all__ = [
    "ShapeLike",
    "make_inputs",
    "output_tensors",
    "check_shape",
    "check_backward",
    "check_torchscript",
    "check_export",
    "count_parameters",
]

#: one shape, or one shape per positional input
ShapeLike = Union[Sequence[int], Sequence[Sequence[int]]]


def _is_multi(input_shape: ShapeLike) -> bool:
    """True when ``input_shape`` lists one shape per input rather than being one shape."""
    return len(input_shape) > 0 and isinstance(input_shape[0], (Sequence, torch.Size))


def make_inputs(input_shape: ShapeLike, seed: int = 0, device: str | torch.device = "cpu") -> tuple[torch.Tensor, ...]:
    """Seeded standard-normal inputs for ``input_shape`` (one shape or a sequence of shapes).

    Args:
        input_shape: one shape, or one shape per positional input.
        seed: seed of the generator, so that repeated calls give the same tensors.
        device: device of the returned tensors.

    Returns:
        a tuple with one tensor per positional input.
    """
    gen = torch.Generator().manual_seed(seed)
    shapes = list(input_shape) if _is_multi(input_shape) else [input_shape]
    return tuple(torch.randn(tuple(int(s) for s in shape), generator=gen).to(device) for shape in shapes)


def output_tensors(out: Any) -> list[torch.Tensor]:
    """All tensors in a network output: a tensor, or a (nested) tuple/list/dict of tensors, in a stable order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        return [t for key in sorted(out, key=str) for t in output_tensors(out[key])]
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in output_tensors(item)]
    return []


def check_shape(net: nn.Module, input_shape: ShapeLike, expected_shape: Sequence[int]) -> torch.Tensor:
    """Run ``net`` in eval mode without gradients and check the output shape.

    In eval mode a network returns exactly one tensor (house rule 5), so any other return type fails the check.
    The module's training flag is restored afterwards.

    Args:
        net: module under test.
        input_shape: one shape, or one shape per positional input.
        expected_shape: expected output shape.

    Returns:
        the output tensor.
    """
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(*make_inputs(input_shape))
    finally:
        net.train(was_training)
    assert isinstance(out, torch.Tensor), f"in eval mode the output must be one tensor, got {type(out).__name__}."
    assert tuple(out.shape) == tuple(expected_shape), f"output shape {tuple(out.shape)} != {tuple(expected_shape)}."
    return out


def check_backward(net: nn.Module, input_shape: ShapeLike, unused: Sequence[str] = ()) -> None:
    """Train-mode forward, backward of the mean output, then check every trainable parameter's gradient.

    The loss is ``out.float().mean()``; when the training-mode output is a tuple/list/dict (deep supervision,
    auxiliary heads) it is the sum of the means of all its tensors. Every parameter with ``requires_grad`` must have
    a gradient that is not ``None`` and is finite; the names of those that fail are reported together. No output may
    contain NaN. Gradients are cleared before and after, and the training flag is restored.

    Args:
        net: module under test.
        input_shape: one shape, or one shape per positional input.
        unused: name prefixes of parameters that by design take no part in the output (they must then have no
            gradient, so the list cannot go stale).
    """
    was_training = net.training
    net.train()
    net.zero_grad(set_to_none=True)
    try:
        outs = output_tensors(net(*make_inputs(input_shape)))
        assert outs, "the training-mode output contains no tensor."
        for i, t in enumerate(outs):
            assert not torch.isnan(t).any(), f"output tensor {i} of the training-mode forward contains NaN."
        loss = torch.stack([t.float().mean() for t in outs]).sum()
        loss.backward()
        missing = [n for n, p in net.named_parameters()
                   if p.requires_grad and p.grad is None and not n.startswith(tuple(unused))]
        stale = [n for n, p in net.named_parameters() if n.startswith(tuple(unused)) and p.grad is not None]
        assert not stale, f"parameters listed as unused have a gradient: {stale}"
        non_finite = [
            n for n, p in net.named_parameters()
            if p.requires_grad and p.grad is not None and not torch.isfinite(p.grad).all()
        ]
        assert not missing, f"parameters without a gradient: {missing}"
        assert not non_finite, f"parameters with a non-finite gradient: {non_finite}"
    finally:
        net.zero_grad(set_to_none=True)
        net.train(was_training)


def _assert_outputs_close(expected: Any, actual: Any, atol: float, what: str) -> None:
    exp_t, act_t = output_tensors(expected), output_tensors(actual)
    assert len(exp_t) == len(act_t), f"{what}: {len(act_t)} output tensors, expected {len(exp_t)}."
    for i, (e, a) in enumerate(zip(exp_t, act_t)):
        assert e.shape == a.shape, f"{what}: output {i} has shape {tuple(a.shape)}, expected {tuple(e.shape)}."
        torch.testing.assert_close(a, e, atol=atol, rtol=1e-5, msg=lambda m, i=i: f"{what}: output {i}: {m}")


def check_torchscript(
    net: nn.Module, input_shape: ShapeLike, atol: float = 1e-5, train: bool = False
) -> torch.jit.ScriptModule:
    """Script ``net``, save it to a temporary file, load it back and compare its outputs with ``net``'s.

    Outputs are compared in eval mode, or in train mode with ``train=True`` (networks whose train-mode output
    carries deep-supervision channels; use dropout 0 so the two runs are comparable).

    ``torch.jit.script`` is deprecated in recent torch releases but is still what MONAI bundles export
    (``ckpt_export``), so its deprecation warning is silenced here; any other warning passes through.

    Args:
        net: module under test.
        input_shape: one shape, or one shape per positional input.
        atol: absolute tolerance of the comparison.
        train: compare train-mode outputs instead of eval-mode ones.

    Returns:
        the reloaded scripted module (in the mode that was compared).
    """
    was_training = net.training
    net.train(train)
    try:
        inputs = make_inputs(input_shape)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.(script|save|load).* deprecated.*")
            scripted = torch.jit.script(net)
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "net.pt")
                torch.jit.save(scripted, path)
                loaded = torch.jit.load(path, map_location="cpu")
        loaded.train(train)
        with torch.no_grad():
            expected = net(*inputs)
            actual = loaded(*inputs)
        _assert_outputs_close(expected, actual, atol, "TorchScript round trip")
    finally:
        net.train(was_training)
    return loaded


def check_export(net: nn.Module, input_shape: ShapeLike, atol: float = 1e-5) -> torch.export.ExportedProgram:
    """``torch.export`` ``net`` in eval mode (static shapes) and compare the exported program's outputs with ``net``'s.

    Args:
        net: module under test.
        input_shape: one shape, or one shape per positional input.
        atol: absolute tolerance of the comparison.

    Returns:
        the exported program.
    """
    was_training = net.training
    net.eval()
    try:
        inputs = make_inputs(input_shape)
        program = torch.export.export(net, inputs)
        with torch.no_grad():
            expected = net(*inputs)
            actual = program.module()(*inputs)
        _assert_outputs_close(expected, actual, atol, "torch.export")
    finally:
        net.train(was_training)
    return program


def count_parameters(net: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameter elements of ``net`` (only those with ``requires_grad`` unless ``trainable_only=False``).

    Shared parameters are counted once (``nn.Module.parameters`` de-duplicates them); buffers such as batch-norm
    running statistics are not parameters and are not counted, which is the convention of the thesis's Table 4.3.
    """
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only))
