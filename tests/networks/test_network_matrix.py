"""The shared network test matrix (see ``tests/networks/matrix/__init__.py``): every network, several sizes."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import torch

from tests.networks.matrix import all_cases
from tests.utils import check_backward, check_shape, check_torchscript, make_inputs

CASES = all_cases()
SIZED = [pytest.param(c, s, id=f"{c.name}-{'x'.join(map(str, np.ravel(s)))}") for c in CASES for s in c.input_shapes]
BY_NAME = [pytest.param(c, id=c.name) for c in CASES]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_every_case_has_two_sizes():
    short = [c.name for c in CASES if len(c.input_shapes) < 2]
    assert not short, f"cases with fewer than two input sizes: {short}"


@pytest.mark.parametrize("case,shape", SIZED)
def test_forward_shape(case, shape):
    check_shape(case.build(), shape, case.expected_shape(shape))


@pytest.mark.parametrize("case,shape", SIZED)
def test_backward(case, shape):
    check_backward(case.build(), shape)


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
        with pytest.raises(case.raises):
            make()
