"""Tests of ``lesionlab.networks.nets.AGMRNet`` specific to the paper: the train-mode output layout, parameter counts
and MACs against the thesis (Tables 3.1, 3.4-3.8, 4.3), equality with D-UNet, the comparison rows' modules. Shapes,
gradients, TorchScript (eval and train), ONNX and invalid arguments are in the shared network matrix
(``tests/networks/matrix/cases_stroke.py``)."""

from __future__ import annotations

import math
import unittest

import torch
import torch.nn as nn
from parameterized import parameterized

from lesionlab.networks.blocks import block_upsample
from lesionlab.networks.nets import AGMRNet, DUNet, split_train_output
from tests.utils import check_shape, count_parameters, make_inputs

# small widths and a 2 x 2 CPA grid so that 32 x 32 inputs work (H, W multiples of 16 * grid)
SMALL = {"features": (4, 8, 16, 32, 64), "cpa_grid": 2, "fusion_reduction": 4}
NO_DROPOUT = {"dropout": 0.0, "mdu_dropout": 0.0}
#: thesis Table 3.7 (and Table 4.3 for the default)
THESIS = {(3, 5, 7, 9): 23_799_283, (3,): 12_658_163, (5,): 18_228_723, (7,): 26_584_563, (9,): 37_725_683}
#: this implementation: the default reading and the "attended+raw" hypothesis; the gap to the thesis is constant
GAP = {"attended": 784_482, "attended+raw": 1_122}
SUM_9C2 = 9 * (256**2 + 128**2 + 64**2 + 32**2)  # 783,360: one more c-channel input per decoder block's first conv
DUNET_PARAMS = 9_503_779

def _count(**kwargs) -> int:
    """Parameters of ``AGMRNet(**kwargs)`` built on the meta device (no memory, no initialisation cost)."""
    with torch.device("meta"):
        return count_parameters(AGMRNet(**kwargs))


def _expected_params(kernels: tuple[int, ...], raw_skip: bool = False) -> int:
    """AGMR-Net's count from D-UNet's, written out from seed_002.md §3.1 independently of the implementation."""
    c_dec = (256, 128, 64, 32)  # decoder widths c; MDU input and output C_in = C' = 2c
    total = DUNET_PARAMS
    total -= 2 * (2 * 64 * 4) + 2 * (2 * 128 * 8)  # D-UNet's four bias-free SE blocks (ratio 16)
    total += 3216 + 12576  # CFF MLPs 2C -> C/8 -> C twice, with biases, C = 64 and 128
    total += 5 * (36 * 18 + 18 + 18 * 36 + 36)  # five CPA modules
    for c in c_dec:
        cin = 2 * c
        total -= 9 * cin * c + c  # D-UNet's 3 x 3 up-convolution C_in -> c
        total += sum(k * k * cin * (cin // len(kernels)) for k in kernels) + cin + 2 * cin  # MDU branches, bias, BN
        total += 9 * (cin - c) * c  # the decoder's first conv takes C' + c = 3c instead of 2c input channels
        if raw_skip:
            total += 9 * c * c  # ... and one more c-channel skip tensor
    return total


class _LegacyMACs:
    """thop-legacy MACs of convolutions (+1 per output with bias), BatchNorm (2 per element) and Linear layers: the
    convention that reproduces the thesis's D-UNet figure (18,089,374,976). Pooling and activations count zero."""

    def __init__(self, net: nn.Module) -> None:
        self.total = 0
        self.handles = [m.register_forward_hook(self._hook) for m in net.modules() if next(m.children(), None) is None]

    def _hook(self, m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        x = args[0]
        if isinstance(m, nn.modules.conv._ConvNd):
            self.total += out.numel() * (x.shape[1] * math.prod(m.kernel_size) + (m.bias is not None))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            self.total += 2 * x.numel()
        elif isinstance(m, nn.Linear):
            self.total += m.in_features * out.numel()

    def close(self) -> int:
        for h in self.handles:
            h.remove()
        return self.total


class TestAGMRNet(unittest.TestCase):
    @parameterized.expand([[True, 2], [False, 1]])
    def test_train_output(self, use_cpa: bool, out_channels: int) -> None:
        attention = "cpa" if use_cpa else "none"
        net = AGMRNet(out_channels=out_channels, encoder_attention=attention, **SMALL, **NO_DROPOUT).train()
        x = make_inputs((2, 4, 64, 32))[0]
        out = net(x)
        n_cpa = 5 if use_cpa else 0
        self.assertEqual(tuple(out.shape), (2, out_channels + n_cpa, 64, 32))
        logits, side, cpa = AGMRNet.split_train_output(out, out_channels, n_cpa, grid=2)
        self.assertEqual(tuple(logits.shape), (2, out_channels, 64, 32))
        self.assertEqual(side, [])
        self.assertEqual(len(cpa), n_cpa)
        if use_cpa:
            # the CPA channels are the encoder's logit maps, block-upsampled; pooling them back is exact
            _, _, enc_logits = net.encoder(x)
            for i in range(5):
                torch.testing.assert_close(cpa[i], enc_logits[i])
                torch.testing.assert_close(out[:, out_channels + i:out_channels + i + 1],
                                           block_upsample(enc_logits[i], [64, 32]))

    def test_split_train_output(self) -> None:
        t = torch.arange(2 * 8 * 4 * 4, dtype=torch.float32).reshape(2, 8, 4, 4)
        logits, side, cpa = split_train_output(t, out_channels=1, num_side=2, num_cpa=5)
        self.assertTrue(torch.equal(logits, t[:, :1]))
        self.assertEqual([s.shape[1] for s in side], [1, 1])
        self.assertTrue(torch.equal(side[1], t[:, 2:3]))
        self.assertTrue(torch.equal(cpa[4], t[:, 7:8]))
        eval_out, no_side, no_cpa = split_train_output(t[:, :1], out_channels=1, num_side=2)
        self.assertTrue(torch.equal(eval_out, t[:, :1]) and no_side == [] and no_cpa == [])
        with self.assertRaises(ValueError):
            split_train_output(t[:, :3], out_channels=1, num_side=2)

    def test_size_constraint(self) -> None:
        net = AGMRNet(features=(4, 8, 16, 32, 64)).eval()  # 6 x 6 grid: H, W multiples of 96
        with torch.no_grad(), self.assertRaises(ValueError):
            net(torch.zeros(1, 4, 64, 64))

    def test_parameter_counts_thesis(self) -> None:
        for skip_mode, gap in GAP.items():
            for kernels, thesis in THESIS.items():
                with self.subTest(skip_mode=skip_mode, kernels=kernels):
                    count = _count(mdu_kernels=kernels, skip_mode=skip_mode)
                    self.assertEqual(count, _expected_params(kernels, skip_mode == "attended+raw"))
                    # the same constant gap for all five Table 3.7 variants: their differences are reproduced exactly
                    self.assertEqual(thesis - count, gap)
        self.assertEqual(_count(), 23_014_801)
        self.assertEqual(_count(skip_mode="attended+raw"), 23_798_161)
        self.assertEqual(GAP["attended"] - GAP["attended+raw"], SUM_9C2)
        self.assertEqual(_count(mdu_kernels=(3, 3, 3, 3)), _count(mdu_kernels=(3,)))  # four 3x3 branches or one

    def test_parameter_counts_ablations(self) -> None:
        # Table 3.1 rows; all modules off is D-UNet, CPA + CFF is Table 4.1's baseline
        self.assertEqual(_count(encoder_attention="none", fusion="se_add", mdu="none"), DUNET_PARAMS)
        self.assertEqual(_count(mdu="none"), 9_521_201)
        self.assertEqual(_count(fusion="se_add", mdu="none"), DUNET_PARAMS + 5 * 1350)
        self.assertEqual(_count(encoder_attention="none", mdu="none"), DUNET_PARAMS - 5120 + 15792)
        # shared CFF MLPs: 5,120 more (see CrossDimensionFusion)
        self.assertEqual(_count(cff_mlp_layout="shared") - _count(), 5120)

    def test_equals_dunet(self) -> None:
        # with every module off AGMR-Net is D-UNet (the same encoder): D-UNet's state dict loads as it is and the
        # outputs match
        kwargs = {"features": (4, 8, 16, 32, 64), "fusion_reduction": 4}
        dunet = DUNet(**kwargs).eval()
        agmr = AGMRNet(encoder_attention="none", fusion="se_add", mdu="none", **kwargs).eval()
        agmr.load_state_dict(dunet.state_dict(), strict=True)
        x = make_inputs((2, 4, 32, 48))[0]
        with torch.no_grad():
            torch.testing.assert_close(agmr(x), dunet(x))

    def test_thesis_macs(self) -> None:
        # thop-legacy MACs (see AGMRNet's docstring): D-UNet's figure exactly, AGMR-Net's within the documented gaps
        thesis = 42_872_026_884
        results = {}
        dunet = {"encoder_attention": "none", "fusion": "se_add", "mdu": "none"}
        for name, kwargs in (("dunet", dunet), ("default", {}), ("raw", {"skip_mode": "attended+raw"})):
            with torch.device("meta"):
                net = AGMRNet(**kwargs).eval()
            counter = _LegacyMACs(net)
            with torch.no_grad():
                net(torch.zeros(1, 4, 192, 192, device="meta"))
            results[name] = counter.close()
        self.assertEqual(results["dunet"], 18_089_374_976)
        self.assertEqual(thesis - results["default"], 1_367_359_668)
        self.assertEqual(thesis - results["raw"], 8_405_172)

    def test_eval_deterministic(self) -> None:
        net = AGMRNet(**SMALL).eval()
        x = make_inputs((2, 4, 32, 32))[0]
        with torch.no_grad():
            self.assertTrue(torch.equal(net(x), net(x)))



# the other comparison rows (Tables 3.4, 3.5, 3.8) as constructor options: [name, kwargs, CPA channels in train mode]
NEW_OPTIONS = [
    ["fine", {"encoder_attention": "fine", "fusion": "se_add", "mdu": "none"}, 0],  # Table 3.4 "D-UNet + FA"
    ["fine_full", {"encoder_attention": "fine"}, 0],
    ["no_attention", {"encoder_attention": "none"}, 0],
    ["add", {"fusion": "add"}, 5],  # Table 3.5
    ["concat", {"fusion": "concat"}, 5],
    ["cff_concat", {"fusion": "cff_concat"}, 5],
    ["se_add", {"fusion": "se_add"}, 5],
    ["mdu_encoder", {"mdu": "encoder"}, 5],  # Table 3.8
    ["mdu_skip", {"mdu": "skip"}, 5],
    ["mdu_skip_raw", {"mdu": "skip", "skip_mode": "attended+raw"}, 5],
]


class TestAGMRNetComparisonRows(unittest.TestCase):
    """``encoder_attention``, ``fusion`` and ``mdu``: Tables 3.4, 3.5 and 3.8 by constructor arguments."""

    @parameterized.expand(NEW_OPTIONS)
    def test_shape_eval_and_train(self, _name: str, kwargs: dict, n_cpa: int) -> None:
        net = AGMRNet(out_channels=2, **kwargs, **SMALL, **NO_DROPOUT)
        check_shape(net, (2, 4, 32, 64), (2, 2, 32, 64))
        net.train()
        out = net(make_inputs((2, 4, 32, 64))[0])
        self.assertEqual(tuple(out.shape), (2, 2 + n_cpa, 32, 64))
        self.assertEqual(net.num_cpa, n_cpa)

    def test_fine_attention_any_multiple_of_16(self) -> None:
        # no patch grid: the CPA size constraint (multiples of 16 * grid) does not apply
        net = AGMRNet(encoder_attention="fine", features=(4, 8, 16, 32, 64)).eval()
        with torch.no_grad():
            self.assertEqual(tuple(net(torch.zeros(1, 4, 48, 80)).shape), (1, 1, 48, 80))

    def test_modules(self) -> None:
        from lesionlab.networks.blocks import CoarsePatchAttention, CrossDimensionFusion, SEAddFusion, UpConv
        from lesionlab.networks.blocks.dimension_fusion import AddFusion, CFFConcatFusion, ConcatFusion
        from lesionlab.networks.blocks.patch_attention import FineSpatialAttention

        net = AGMRNet(encoder_attention="fine", **SMALL)
        self.assertTrue(all(isinstance(m, FineSpatialAttention) for m in net.encoder.attention))
        self.assertTrue(all(isinstance(m, CoarsePatchAttention) for m in AGMRNet(**SMALL).encoder.attention))
        for fusion, cls in (("cff", CrossDimensionFusion), ("add", AddFusion), ("concat", ConcatFusion),
                            ("cff_concat", CFFConcatFusion), ("se_add", SEAddFusion)):
            self.assertTrue(all(type(m) is cls for m in AGMRNet(fusion=fusion, **SMALL).encoder.fusion), fusion)
        enc = AGMRNet(mdu="encoder", **SMALL)
        self.assertEqual([m.out_channels for m in enc.encoder.stage_mdu], [4, 8, 16, 32])
        self.assertTrue(all(isinstance(b.up, UpConv) and isinstance(b.skip_mdu, nn.Identity) for b in enc.decoder))
        skip = AGMRNet(mdu="skip", **SMALL)
        self.assertEqual([b.skip_mdu.out_channels for b in skip.decoder], [32, 16, 8, 4])
        self.assertTrue(all(isinstance(m, nn.Identity) for m in skip.encoder.stage_mdu))

    def test_ill_option_names_the_argument(self) -> None:
        for kwargs, message in (({"encoder_attention": "patch"}, "('cpa', 'fine', 'none')"),
                                ({"fusion": "mul"}, "('cff', 'add', 'concat', 'cff_concat', 'se_add')"),
                                ({"mdu": "bottleneck"}, "('decoder', 'encoder', 'skip', 'none')"),
                                ({"mdu": "encoder", "features": (30, 64, 128, 256, 512)}, "features[:4]"),
                                ({"mdu": "skip", "up_kernel_size": 2}, "up_kernel_size"),
                                ({"fusion": "cff_concat", "cff_reduction": 65}, "cff_reduction")):
            with self.subTest(**kwargs), self.assertRaises(ValueError) as ctx:
                AGMRNet(**kwargs)
            self.assertIn(message, str(ctx.exception))

    def test_parameter_counts(self) -> None:
        # defaults unchanged
        self.assertEqual(_count(), 23_014_801)
        self.assertEqual(_count(encoder_attention="none", fusion="se_add", mdu="none"), DUNET_PARAMS)
        self.assertEqual(_count(mdu="none"), 9_521_201)
        # Table 3.4: D-UNet + FA = D-UNet + five 7x7 convs 2 -> 1 without bias
        self.assertEqual(_count(encoder_attention="fine", fusion="se_add", mdu="none"), DUNET_PARAMS + 5 * 98)
        # Table 3.5: CFF's MLPs removed (add); + a 1x1 conv 2C -> C at C = 64, 128 (concat, cff_concat)
        cff_mlps, proj = 3216 + 12576, (2 * 64 * 64 + 64) + (2 * 128 * 128 + 128)
        self.assertEqual(_count(fusion="add"), 23_014_801 - cff_mlps)
        self.assertEqual(_count(fusion="concat"), 23_014_801 - cff_mlps + proj)
        self.assertEqual(_count(fusion="cff_concat"), 23_014_801 + proj)
        # Table 3.8: AGMR-Net without MDU + MultiScaleConv(C -> C) at C = 32, 64, 128, 256
        msc = sum(sum(k * k * c * (c // 4) for k in (3, 5, 7, 9)) + 3 * c for c in (32, 64, 128, 256))
        self.assertEqual(_count(mdu="encoder"), 9_521_201 + msc)
        self.assertEqual(_count(mdu="skip"), 9_521_201 + msc)
        self.assertEqual(_count(mdu="encoder"), 13_091_281)


if __name__ == "__main__":
    unittest.main()
