"""The shared network test matrix: one entry per network configuration, checked by ``test_network_matrix.py``.

Every network of the project joins the matrix with a :class:`NetCase` in a ``cases_<paper>.py`` module of this
package (a module-level list named ``CASES``). The matrix checks, for each case and each of its input sizes:

- forward shape in eval mode (``expected_shape(input_shape)``; one shape per output for blocks with several),
- backward in train mode with a finite gradient on every trainable parameter,
- TorchScript script/save/load round trip (eval mode, and train mode when ``script_train``),
- ONNX export + ONNX Runtime parity when ``onnx`` is set (the networks the bundles export),
- every ``invalid`` constructor call raises ``ValueError`` (or the listed exception type).

The per-network test files keep only what is specific to the paper (parameter counts, equations).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from tests.utils import ShapeLike

__all__ = ["NetCase", "all_cases"]


@dataclass(frozen=True)
class NetCase:
    """One network configuration in the matrix.

    Args:
        name: unique id shown in the test names, e.g. ``"DUNet-small"``.
        build: builds a fresh network (small widths so that the matrix stays fast).
        input_shapes: two or more input shapes (each one shape, or one shape per positional input).
        expected_shape: maps an input shape to the eval-mode output shape (a sequence of shapes when ``outputs > 1``).
        invalid: constructor calls (zero-argument callables) that must raise ``raises``.
        raises: exception type the invalid calls raise.
        backward: run the backward check (False only for parameter-free modules, whose input gradients their own
            test file checks).
        script: run the TorchScript round trip.
        script_train: also compare TorchScript in train mode (deep supervision outputs; dropout 0).
        onnx: export to ONNX and compare with ONNX Runtime (for networks a bundle exports).
        atol: tolerance of the round-trip comparisons.
        unused: name prefixes of parameters that by design get no gradient (e.g. heads a wrapper discards).
        outputs: number of tensors the module returns in eval mode (networks return one; some blocks, e.g. the
            attention blocks, return a tuple).
    """

    name: str
    build: Callable[[], nn.Module]
    input_shapes: Sequence[ShapeLike]
    expected_shape: Callable[[Any], Sequence[int]]
    invalid: Sequence[Callable[[], Any]] = field(default_factory=tuple)
    raises: type[BaseException] = ValueError
    backward: bool = True
    script: bool = True
    script_train: bool = False
    onnx: bool = False
    atol: float = 1e-4
    unused: Sequence[str] = ()
    outputs: int = 1


def all_cases() -> list[NetCase]:
    """Every ``CASES`` entry of the ``cases_*`` modules of this package, in module order; names must be unique."""
    cases: list[NetCase] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cases_"):
            cases.extend(importlib.import_module(f"{__name__}.{info.name}").CASES)
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"network matrix: duplicate case names {dupes}")
    return cases
