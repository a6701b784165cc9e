"""Two-stage background reuse (seed 001 Eqs. 3.2-3.4) on hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from lesionlab.pipelines.two_stage import TwoStageInferer, foreground_probability, fuse_background, fuse_probabilities

# 1 x 3 classes x 1 x 4 pixels: multi-class arg-max = [1, 2, 0, 2]
MULTI = torch.tensor([[0.0, 0.0, 5.0, 0.0], [3.0, 0.0, 1.0, 1.0], [1.0, 4.0, 0.0, 2.0]]).reshape(1, 3, 1, 4)
# binary logits: P(fg) = sigmoid → [0.88, 0.5 exactly, 0.88, 0.12]
BINARY = torch.tensor([2.0, 0.0, 2.0, -2.0]).reshape(1, 1, 1, 4)


def test_fusion_by_hand():
    fused = fuse_background(MULTI, BINARY)
    # pixel 0: fg, keeps 1; pixel 1: P = 0.5 is not > 0.5 → background; pixel 2: fg but multi says 0 → 0;
    # pixel 3: bg → 0
    assert fused.flatten().tolist() == [1, 0, 0, 0]
    assert fuse_background(MULTI, BINARY, tau=0.1).flatten().tolist() == [1, 2, 0, 2]
    assert fuse_background(MULTI, BINARY, tau=0.9).flatten().tolist() == [0, 0, 0, 0]


def test_fusion_only_removes_foreground():
    torch.manual_seed(0)
    multi, binary = torch.randn(2, 5, 8, 8), torch.randn(2, 1, 8, 8)
    fused = fuse_background(multi, binary)
    normal = multi.argmax(1, keepdim=True)
    assert torch.all((fused == normal) | (fused == 0))
    assert torch.equal(fused > 0, (normal > 0) & (torch.sigmoid(binary) > 0.5))


def test_two_channel_binary_and_background_index():
    two = torch.cat([torch.zeros_like(BINARY), BINARY], 1)  # softmax([0, z])[1] = sigmoid(z)
    torch.testing.assert_close(foreground_probability(two), torch.sigmoid(BINARY))
    assert fuse_background(MULTI, two).flatten().tolist() == [1, 0, 0, 0]
    assert fuse_background(MULTI, torch.sigmoid(BINARY), binary_logits=False).flatten().tolist() == [1, 0, 0, 0]
    assert fuse_background(MULTI, BINARY, background_index=2).flatten().tolist() == [1, 2, 0, 2]


def test_probabilities_argmax_is_fused_map():
    prob = fuse_probabilities(MULTI, BINARY)
    assert torch.equal(prob.argmax(1, keepdim=True), fuse_background(MULTI, BINARY))
    torch.testing.assert_close(prob[0, :, 0, 0], torch.softmax(MULTI[0, :, 0, 0], 0))
    assert prob[0, :, 0, 3].tolist() == [1.0, 0.0, 0.0]
    assert prob.sum(1).sub(1).abs().max() < 1e-6


class _Const(nn.Module):
    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out.expand(x.shape[0], *self.out.shape[1:])


def test_inferer_runs_both_networks():
    inferer = TwoStageInferer(_Const(BINARY), tau=0.5)
    out = inferer(torch.zeros(1, 3, 1, 4), _Const(MULTI))
    assert out.argmax(1).flatten().tolist() == [1, 0, 0, 0]
    assert math.isclose(out[0, 1, 0, 0].item(), torch.softmax(MULTI[0, :, 0, 0], 0)[1].item(), rel_tol=1e-6)


@pytest.mark.parametrize("call", [
    lambda: fuse_background(MULTI, BINARY, tau=1.0),
    lambda: fuse_background(MULTI, BINARY, background_index=3),
    lambda: fuse_background(MULTI, BINARY[..., :2]),
    lambda: fuse_background(MULTI, torch.zeros(1, 3, 1, 4)),
    lambda: TwoStageInferer(nn.Identity(), tau=-0.1),
])
def test_invalid(call):
    with pytest.raises(ValueError):
        call()
