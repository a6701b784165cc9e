"""Matrix entries for the stroke networks (seed 002): D-UNet, AGMR-Net and its comparison rows, TSRL-Net and its
ablations, and the 2D / 3D baselines the stroke bundles train (``configs/variants`` of the D-UNet bundle, the 3D U-Net
bundle), at small widths. ONNX for the networks the bundles export by default."""

from __future__ import annotations

from monai.networks.nets import AttentionUnet, BasicUNet, BasicUNetPlusPlus, UNet

from lesionlab.networks.nets import AGMRNet, DUNet, TSRLNet
from lesionlab.networks.utils import FirstOutput
from tests.networks.matrix import NetCase

_SMALL = {"features": (4, 8, 16, 32, 64), "fusion_reduction": 4}
#: AGMR-Net / TSRL-Net at small widths; CPA grid 2 so that 32 x 32 inputs are allowed (H, W multiples of 16 * grid)
_AGMR = {"features": (4, 8, 8, 16, 16), "cpa_grid": 2, "fusion_reduction": 4}
_SIZES_25D = [(2, 4, 32, 32), (1, 4, 64, 32)]
_NO_DROPOUT = {"dropout": 0.0, "mdu_dropout": 0.0}


def _seg_shape(out_channels: int):
    return lambda s: (s[0], out_channels, *s[2:])


def _agmr(name: str, script_train: bool = False, **kwargs) -> NetCase:
    """A comparison row of AGMR-Net (train-mode TorchScript only where the train output's layout differs)."""
    return NetCase(name=name, build=lambda: AGMRNet(**_AGMR, **_NO_DROPOUT, **kwargs), input_shapes=_SIZES_25D,
                   expected_shape=_seg_shape(kwargs.get("out_channels", 1)), script_train=script_train)


def _tsrl(name: str, script_train: bool = False, **kwargs) -> NetCase:
    """An ablation row of TSRL-Net (train-mode TorchScript only where the train output's layout differs)."""
    return NetCase(name=name, build=lambda: TSRLNet(**_AGMR, **_NO_DROPOUT, **kwargs), input_shapes=_SIZES_25D,
                   expected_shape=_seg_shape(kwargs.get("out_channels", 1)), script_train=script_train)


CASES = [
    NetCase(
        name="DUNet-small",
        build=lambda: DUNet(**_SMALL),
        input_shapes=[(2, 4, 32, 32), (1, 4, 64, 48)],
        expected_shape=_seg_shape(1),
        invalid=[lambda: DUNet(spatial_dims=3), lambda: DUNet(spatial_dims=1), lambda: DUNet(in_channels=3),
                 lambda: DUNet(in_channels=6), lambda: DUNet(in_channels=0), lambda: DUNet(out_channels=0),
                 lambda: DUNet(features=(32, 64, 128, 256)), lambda: DUNet(features=(32, 64, 128, 256, 512, 1024)),
                 lambda: DUNet(features=(32, 64, 0, 256, 512)),
                 lambda: DUNet(features=(4, 8, 16, 32, 64)),  # fusion stage of 8 channels with the default ratio 16
                 lambda: DUNet(fusion_reduction=65),  # 64 // 65 == 0 at fusion stage 2
                 lambda: DUNet(up_kernel_size=2)],  # the Keras 2x2 up-convolution is not a transposed conv here
        onnx=True,
    ),
    NetCase(name="DUNet-8slices-2classes", build=lambda: DUNet(in_channels=8, out_channels=2, **_SMALL),
            input_shapes=[(2, 8, 16, 16), (1, 8, 32, 48)], expected_shape=_seg_shape(2)),
    # AGMR-Net: the bundle's network, then the rows of Tables 3.1, 3.4, 3.5, 3.7 and 3.8 the bundle's overrides build
    NetCase(
        name="AGMRNet-small",
        build=lambda: AGMRNet(**_AGMR, **_NO_DROPOUT),
        input_shapes=_SIZES_25D,
        expected_shape=_seg_shape(1),
        invalid=[lambda: AGMRNet(spatial_dims=3), lambda: AGMRNet(in_channels=6), lambda: AGMRNet(out_channels=0),
                 lambda: AGMRNet(features=(4, 8, 8, 16)), lambda: AGMRNet(cpa_grid=0), lambda: AGMRNet(dropout=1.0),
                 lambda: AGMRNet(mdu_dropout=-0.1), lambda: AGMRNet(mdu_kernels=(3, 4)),
                 lambda: AGMRNet(features=(4, 6, 8, 16, 16)), lambda: AGMRNet(skip_mode="raw"),
                 lambda: AGMRNet(encoder_attention="pixel"), lambda: AGMRNet(fusion="sum"),
                 lambda: AGMRNet(mdu="bottleneck"), lambda: AGMRNet(cff_mlp_layout="joint"),
                 lambda: AGMRNet(mdu="encoder", features=(30, 64, 128, 256, 512)),
                 lambda: AGMRNet(fusion="se_add", fusion_reduction=65), lambda: AGMRNet(cff_reduction=65),
                 lambda: AGMRNet(cff_reduction=0), lambda: AGMRNet(mdu="none", up_kernel_size=2)],
        script_train=True,
        onnx=True,
    ),
    _agmr("AGMRNet-dunet-backbone", script_train=True, encoder_attention="none", fusion="se_add", mdu="none"),
    _agmr("AGMRNet-cpa-only", fusion="se_add", mdu="none"),
    _agmr("AGMRNet-cff-only", encoder_attention="none", mdu="none"),
    _agmr("AGMRNet-mdu-only", encoder_attention="none", fusion="se_add"),
    _agmr("AGMRNet-without-mdu", mdu="none"),
    _agmr("AGMRNet-mdu-k3", mdu_kernels=(3,)),
    _agmr("AGMRNet-fine-attention", encoder_attention="fine", fusion="se_add", mdu="none"),
    _agmr("AGMRNet-fusion-add", fusion="add"),
    _agmr("AGMRNet-fusion-concat", fusion="concat"),
    _agmr("AGMRNet-fusion-cff-concat", fusion="cff_concat"),
    _agmr("AGMRNet-cff-shared", cff_mlp_layout="shared"),
    _agmr("AGMRNet-mdu-encoder", mdu="encoder"),
    _agmr("AGMRNet-mdu-skip", mdu="skip"),
    _agmr("AGMRNet-attended+raw-2classes", script_train=True, skip_mode="attended+raw", out_channels=2),
    # TSRL-Net: the bundle's network and the Table 4.1 / 4.7 rows
    NetCase(
        name="TSRLNet-small",
        build=lambda: TSRLNet(**_AGMR, **_NO_DROPOUT),
        input_shapes=_SIZES_25D,
        expected_shape=_seg_shape(1),
        invalid=[lambda: TSRLNet(spatial_dims=3), lambda: TSRLNet(in_channels=2), lambda: TSRLNet(out_channels=0),
                 lambda: TSRLNet(residual_attention="full"), lambda: TSRLNet(skip_mode="attended"),
                 lambda: TSRLNet(residual_attention="none", skip_mode="both"), lambda: TSRLNet(mdu_kernels=(2,)),
                 lambda: TSRLNet(mdu="none", up_kernel_size=0), lambda: TSRLNet(cff_reduction=1000),
                 lambda: TSRLNet(mdu="skip"), lambda: TSRLNet(fusion="sum"), lambda: TSRLNet(dropout=1.0),
                 lambda: TSRLNet(cpa_grid=0)],
        script_train=True,
        onnx=True,
    ),
    _tsrl("TSRLNet-baseline", script_train=True, residual_attention="none", deep_supervision=False),
    _tsrl("TSRLNet-ra-only", residual_attention="ra"),
    _tsrl("TSRLNet-pa-only-no-side-outputs", residual_attention="pa", deep_supervision=False),
    _tsrl("TSRLNet-skip-both-detached", skip_mode="both", detach_attention=True),
    _tsrl("TSRLNet-se-add-upconv-3classes", script_train=True, fusion="se_add", mdu="none", out_channels=3),
    # the 2D baselines of the D-UNet bundle's configs/variants, and the 3D U-Net bundle's network (MONAI networks)
    NetCase(name="BasicUNet-2.5D", build=lambda: BasicUNet(2, 4, 1, features=(4, 8, 8, 16, 16, 4), norm="batch"),
            input_shapes=[(2, 4, 32, 32), (1, 4, 48, 64)], expected_shape=_seg_shape(1)),
    NetCase(name="AttentionUnet-2.5D",
            build=lambda: AttentionUnet(2, 4, 1, channels=(4, 8, 8, 16, 16), strides=(2, 2, 2, 2)),
            input_shapes=[(2, 4, 32, 32), (1, 4, 64, 48)], expected_shape=_seg_shape(1)),
    NetCase(name="FirstOutput-BasicUNetPlusPlus-2.5D",
            build=lambda: FirstOutput(BasicUNetPlusPlus(2, 4, 1, features=(4, 8, 8, 16, 16, 4), norm="batch",
                                                        deep_supervision=False)),
            input_shapes=[(2, 4, 32, 32), (1, 4, 48, 64)], expected_shape=_seg_shape(1),
            # BasicUNetPlusPlus builds its three deep-supervision heads even with deep_supervision=False
            unused=[f"network.final_conv_0_{i}." for i in (1, 2, 3)]),
    NetCase(name="UNet3D-bundle",
            build=lambda: UNet(3, 1, 1, channels=(4, 8, 8, 16, 16), strides=(2, 2, 2, 2), num_res_units=2,
                               norm="batch"),
            input_shapes=[(2, 1, 16, 16, 16), (1, 1, 32, 16, 48)], expected_shape=_seg_shape(1),
            invalid=[lambda: UNet(3, 1, 1, channels=(4, 8, 16), strides=(2,))], onnx=True),
]
