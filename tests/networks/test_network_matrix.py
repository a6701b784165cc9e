"""The shared network test matrix (see ``tests/networks/matrix/__init__.py``): every network, several sizes."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

from tests.networks.matrix import all_cases
from tests.utils import check_backward, check_shape, check_torchscript, make_inputs, output_tensors

CASES = all_cases()


def _shape_id(shape) -> str:
    """``2x4x32x32``, or ``2x8x2x6x6+2x8x6x6`` for one shape per input."""
    if len(shape) and isinstance(shape[0], (tuple, list)):
        return "+".join(_shape_id(s) for s in shape)
    return "x".join(map(str, shape))


SIZED = [pytest.param(c, s, id=f"{c.name}-{_shape_id(s)}") for c in CASES for s in c.input_shapes]
BY_NAME = [pytest.param(c, id=c.name) for c in CASES]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_every_case_has_two_sizes():
    short = [c.name for c in CASES if len(c.input_shapes) < 2]
    assert not short, f"cases with fewer than two input sizes: {short}"


@pytest.mark.parametrize("case,shape", SIZED)
def test_forward_shape(case, shape):
    if case.outputs == 1:
        check_shape(case.build(), shape, case.expected_shape(shape))
        return
    net = case.build().eval()
    with torch.no_grad():
        outs = output_tensors(net(*make_inputs(shape)))
    assert [tuple(o.shape) for o in outs] == [tuple(e) for e in case.expected_shape(shape)]


@pytest.mark.parametrize("case,shape", [p for p in SIZED if p.values[0].backward])
def test_backward(case, shape):
    check_backward(case.build(), shape, unused=case.unused)


@pytest.mark.parametrize("case", BY_NAME)
def test_torchscript(case):
    if not case.script:
        pytest.skip(f"{case.name}: not scriptable by design (see its NetCase)")
    net = case.build()
    check_torchscript(net, case.input_shapes[0], atol=case.atol)
    if case.script_train:
        check_torchscript(net, case.input_shapes[0], atol=case.atol, train=True)


@pytest.mark.parametrize("case", [p for p in BY_NAME if p.values[0].onnx])
def test_onnx(case):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the deploy extra")
    net = case.build().eval()
    inputs = make_inputs(case.input_shapes[0])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "net.onnx")
        names = [f"input{i}" for i in range(len(inputs))]
        torch.onnx.export(net, inputs, path, input_names=names, output_names=["output"], dynamo=False)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
    with torch.no_grad():
        want = net(*inputs).numpy()
    np.testing.assert_allclose(got, want, atol=case.atol, rtol=1e-4)


@pytest.mark.parametrize("case", BY_NAME)
def test_invalid_arguments(case):
    for i, make in enumerate(case.invalid):
        try:
            make()
        except case.raises:
            continue
        pytest.fail(f"{case.name}: invalid call {i} (in the order of its NetCase) did not raise {case.raises.__name__}")
