"""Tests of ``lesionlab.networks.nets.DUNet`` specific to the paper: parameter counts and MACs against the thesis,
the input layout, ``torch.export``. Shapes, gradients, TorchScript, ONNX and invalid arguments are in the shared
network matrix (``tests/networks/matrix/cases_stroke.py``)."""

from __future__ import annotations

import unittest
from collections.abc import Sequence
from typing import NamedTuple

import torch

from lesionlab.networks.nets import DUNet
from tests.utils import check_export, check_shape, count_parameters, make_inputs

__all__ = ["Layer", "dunet_layer_table", "table_params", "table_macs"]

# small widths for speed; the fusion stages then have 8 and 16 channels, so the SE ratio must be <= 8
SMALL = {"features": (4, 8, 16, 32, 64), "fusion_reduction": 4}
THESIS_PARAMS = 9_503_779  # thesis Table 4.3, D-UNet


class Layer(NamedTuple):
    """One row of the hand-written layer table.

    ``kind`` is ``conv``, ``convT`` (stride-2 transposed), ``upconv`` (the Keras up-sampling + convolution, only in
    the arithmetic), ``bn``, ``fc`` (bias-free linear) or ``gap`` (global average pool of the SE). ``vox`` is the
    number of *output* voxels per sample (for ``gap``: input voxels); ``k`` the kernel volume.
    """

    kind: str
    cin: int
    cout: int
    k: int
    vox: int


def dunet_layer_table(
    in_channels: int = 4,
    out_channels: int = 1,
    features: Sequence[int] = (32, 64, 128, 256, 512),
    reduction: int = 16,
    size: tuple[int, int] = (192, 192),
    up: str = "convT",
) -> list[Layer]:
    """D-UNet as a list of layers, written out from seed_002.md §3.0 independently of the implementation.

    ``up="convT"`` is the 3x3 stride-2 transposed convolution (the implementation, thesis count); ``up="keras"`` is the
    original Keras ``UpSampling2D`` + 2x2 convolution, which only exists here, in the arithmetic.
    """
    f = tuple(features)
    px = [size[0] * size[1] // 4**i for i in range(5)]  # pixels per slice at stages 1-5 (2x2 pooling)
    rows: list[Layer] = []

    def bn_block(cin: int, c: int, k: int, vox: int) -> None:  # (conv k -> BN -> ReLU) x 2
        rows.extend([Layer("conv", cin, c, k, vox), Layer("bn", c, c, 0, vox)])
        rows.extend([Layer("conv", c, c, k, vox), Layer("bn", c, c, 0, vox)])

    # 2D encoder E_Block 1-5: BN_block(chans[i] -> f[i]) with 3x3 kernels
    chans = (in_channels,) + f
    for i in range(5):
        bn_block(chans[i], f[i], 9, px[i])
    # 3D encoder 3D_Block 1-3 on the (1, S, H, W) volume, 3x3x3 kernels, depth S, S/2, S/4
    chans3d = (1,) + f[:3]
    for i in range(3):
        bn_block(chans3d[i], f[i], 27, (in_channels // 2**i) * px[i])
    # D_SE_Add at stages 2 and 3: Conv3d(C -> 1, 1x1x1) -> Conv2d(D -> C, 3x3) -> SE, plus SE(2D feature)
    for i in (1, 2):
        c, depth = f[i], in_channels // 2**i
        rows.extend([Layer("conv", c, 1, 1, depth * px[i]), Layer("conv", depth, c, 9, px[i])])
        for _ in range(2):  # one SE per branch: GAP, FC C -> C/r, FC C/r -> C, no biases
            rows.extend([Layer("gap", c, c, 0, px[i]), Layer("fc", c, c // reduction, 0, 1)])
            rows.append(Layer("fc", c // reduction, c, 0, 1))
    # decoder: up to c = f[i-1] channels at stage i-1's size, concat skip, BN_block(2c -> c)
    for i in (4, 3, 2, 1):
        c = f[i - 1]
        rows.append(Layer("convT", f[i], c, 9, px[i - 1]) if up == "convT" else Layer("upconv", f[i], c, 4, px[i - 1]))
        bn_block(2 * c, c, 9, px[i - 1])
    rows.append(Layer("conv", f[0], out_channels, 1, px[0]))  # head
    return rows


def table_params(rows: list[Layer]) -> int:
    """Parameters: conv ``k * cin * cout + cout`` (bias), BN ``2 * c``, FC ``cin * cout`` (no bias)."""
    total = 0
    for r in rows:
        if r.kind in ("conv", "convT", "upconv"):
            total += r.k * r.cin * r.cout + r.cout
        elif r.kind == "bn":
            total += 2 * r.cout
        elif r.kind == "fc":
            total += r.cin * r.cout
    return total


def table_macs(rows: list[Layer], convention: str, batch: int = 1) -> int:
    """MACs of the table for one counting convention.

    - ``thop_legacy_conv``: per output element ``cin * k + 1`` (bias), convolutions only (thop <= 0.0.31);
    - ``thop_current_conv``: per output element ``cin * k``, convolutions only (thop >= 0.1);
    - ``thop_legacy_all``: ``thop_legacy_conv`` + BN ``2 * numel`` + FC ``cin * cout`` + GAP ``(vox + 1) * C``;
    - ``thesis``: ``thop_legacy_all`` without the GAP term (reproduces Table 4.3's 18,089,374,976);
    - ``torch``: ``FlopCounterMode`` / 2: convolutions ``cin * k`` per output element, transposed convolutions per
      *input* element (a quarter of the output pixels), FC ``cin * cout``; nothing else.
    """
    total = 0
    for r in rows:
        if r.kind in ("conv", "convT", "upconv"):
            outputs = r.vox * r.cout
            if convention == "thop_current_conv" or convention == "torch":
                per = r.cin * r.k
            else:
                per = r.cin * r.k + 1
            if convention == "torch" and r.kind == "convT":
                outputs //= 4
            total += outputs * per
        elif r.kind == "bn" and convention in ("thop_legacy_all", "thesis"):
            total += 2 * r.cout * r.vox
        elif r.kind == "fc" and convention in ("thop_legacy_all", "thesis", "torch"):
            total += r.cin * r.cout
        elif r.kind == "gap" and convention == "thop_legacy_all":
            total += (r.vox + 1) * r.cout
    return batch * total


class TestDUNet(unittest.TestCase):
    def test_export(self) -> None:
        check_export(DUNet(**SMALL), (1, 4, 32, 32))

    def test_parameter_count_thesis(self) -> None:
        net = DUNet()
        self.assertEqual(count_parameters(net), THESIS_PARAMS)
        self.assertEqual(table_params(dunet_layer_table()), THESIS_PARAMS)

    def test_parameter_count_table(self) -> None:
        for kwargs in ({"features": (8, 16, 32, 64, 128)}, {"in_channels": 8, "out_channels": 2, **SMALL}):
            rows = dunet_layer_table(
                in_channels=kwargs.get("in_channels", 4), out_channels=kwargs.get("out_channels", 1),
                features=kwargs["features"], reduction=kwargs.get("fusion_reduction", 16),
            )
            with self.subTest(kwargs=kwargs):
                self.assertEqual(count_parameters(DUNet(**kwargs)), table_params(rows))
        # the Keras up-sampling variant of the spec (Appendix A), arithmetic only: 3x3 -> 2x2 removes 5 * cin * c
        self.assertEqual(table_params(dunet_layer_table(up="keras")), 8_633_379)
        self.assertEqual(table_params(dunet_layer_table(features=(8, 16, 32, 64, 128))), 596_875)

    def test_layout(self) -> None:
        # (B, S, H, W) -> (B, out, H, W); H != W catches a transposed layout
        net = DUNet(in_channels=4, out_channels=3, **SMALL)
        check_shape(net, (2, 4, 16, 48), (2, 3, 16, 48))
        with torch.no_grad():
            net.eval()
            x = make_inputs((1, 4, 32, 32))[0]
            # the slice order matters (3D branch and first 2D conv), so the network is not slice-permutation invariant
            self.assertFalse(torch.allclose(net(x), net(x.flip(1))))
            with self.assertRaises(RuntimeError):  # a depth-axis volume (B, 1, S, H, W) is not the input layout
                net(x.unsqueeze(1))
            with self.assertRaises(RuntimeError):  # H, W must be divisible by 16
                net(torch.zeros(1, 4, 40, 40))

    def test_eval_deterministic(self) -> None:
        net = DUNet(**SMALL).eval()
        x = make_inputs((2, 4, 32, 32))[0]
        with torch.no_grad():
            self.assertTrue(torch.equal(net(x), net(x)))


if __name__ == "__main__":
    unittest.main()
