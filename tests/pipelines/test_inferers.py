"""Slice25DInferer: shape, geometry, equivalence with per-slice stacking, batching, memory."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from lesionlab.networks import DUNet
from lesionlab.pipelines.inferers import Slice25DInferer
from lesionlab.transforms import NeighbourSliceStack


class _Recorder(torch.nn.Module):
    """Returns the centre channel (slice i) and records the batch sizes it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return x[:, 2:3] * 2


def test_output_shape_geometry_and_batches():
    affine = torch.diag(torch.tensor([0.9, 0.9, 3.0, 1.0]))
    x = MetaTensor(torch.rand(2, 1, 16, 12, 11), affine=affine)
    net = _Recorder()
    y = Slice25DInferer(sw_batch_size=4)(x, net)
    assert y.shape == (2, 1, 16, 12, 11)
    assert isinstance(y, MetaTensor) and torch.allclose(y.affine, x.affine)
    assert net.batches == [8, 8, 3 * 2]  # slices 0-3, 4-7, 8-10 for both volumes
    torch.testing.assert_close(y.as_tensor(), x.as_tensor() * 2)


def test_matches_manual_stacking_with_dunet_and_sigmoid():
    torch.manual_seed(0)
    net = DUNet(features=(4, 16, 32, 32, 64)).eval()
    vol = torch.rand(1, 1, 32, 32, 6)
    with torch.no_grad():
        y = Slice25DInferer(sw_batch_size=4, activation="sigmoid")(vol, net)
        stacks = NeighbourSliceStack()(vol[0])  # (4, H, W, D)
        ref = torch.sigmoid(net(stacks.permute(3, 0, 1, 2)))  # (D, 1, H, W)
    torch.testing.assert_close(y[0], ref.permute(1, 2, 3, 0), atol=1e-6, rtol=1e-5)
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


def test_memory_does_not_grow_with_depth():
    # the network sees at most sw_batch_size stacks at a time, whatever the depth
    seen = []

    def net(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.numel())
        return x[:, :1]

    Slice25DInferer(sw_batch_size=3)(torch.rand(1, 1, 8, 8, 50), net)
    assert max(seen) == 3 * 4 * 8 * 8


def test_invalid():
    with pytest.raises(ValueError):
        Slice25DInferer(sw_batch_size=0)
    with pytest.raises(ValueError):
        Slice25DInferer(activation="relu")
    with pytest.raises(ValueError):
        Slice25DInferer()(torch.rand(1, 16, 16, 4), lambda x: x)
