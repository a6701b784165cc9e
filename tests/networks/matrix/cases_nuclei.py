"""Matrix entries for the nuclei class-imbalance networks (seed 001): DeepLabV3+, UNet3+ and the MONAI baselines."""

from __future__ import annotations

from monai.networks.nets import AttentionUnet, BasicUNet

from lesionlab.networks.nets import DeepLabV3Plus, UNet3Plus, UNetPlusPlus
from tests.networks.matrix import NetCase

_DEEPLAB = {"layers": (1, 1, 1, 1), "widths": (4, 8, 8, 8), "stem_channels": 8, "aspp_channels": 8,
            "low_level_channels": 4, "decoder_channels": 8}


def _seg_shape(out_channels: int):
    return lambda s: (s[0], out_channels, *s[2:])


CASES = [
    NetCase(
        name="DeepLabV3Plus-small-os16",
        build=lambda: DeepLabV3Plus(2, 3, 7, **_DEEPLAB),
        input_shapes=[(2, 3, 64, 64), (1, 3, 48, 80)],
        expected_shape=_seg_shape(7),
        invalid=[lambda: DeepLabV3Plus(1, 3, 7), lambda: DeepLabV3Plus(2, 3, 7, output_stride=4),
                 lambda: DeepLabV3Plus(2, 3, 0), lambda: DeepLabV3Plus(2, 3, 7, layers=(1, 1, 1)),
                 lambda: DeepLabV3Plus(2, 3, 7, atrous_rates=(0, 6)), lambda: DeepLabV3Plus(2, 3, 7, dropout=1.0)],
        onnx=True,
    ),
    NetCase(
        name="DeepLabV3Plus-small-os8-binary",
        build=lambda: DeepLabV3Plus(2, 3, 1, output_stride=8, **_DEEPLAB),
        input_shapes=[(1, 3, 32, 32), (2, 3, 40, 24)],
        expected_shape=_seg_shape(1),
        onnx=True,
    ),
    NetCase(
        name="DeepLabV3Plus-small-3d",
        build=lambda: DeepLabV3Plus(3, 1, 2, **_DEEPLAB),
        input_shapes=[(1, 1, 32, 32, 32), (2, 1, 16, 32, 24)],
        expected_shape=_seg_shape(2),
    ),
    # MONAI baselines as the nuclei bundle configures them (widths reduced here for speed)
    NetCase(
        name="BasicUNet-nuclei",
        build=lambda: BasicUNet(2, 3, 7, features=(4, 8, 8, 16, 16, 4)),
        input_shapes=[(2, 3, 32, 32), (1, 3, 48, 64)],
        expected_shape=_seg_shape(7),
        invalid=[lambda: BasicUNet(2, 3, 7, features=(4, 8))],
        raises=(ValueError, AssertionError),
        onnx=True,
    ),
    NetCase(
        name="UNetPlusPlus-nuclei",
        build=lambda: UNetPlusPlus(2, 3, 7, features=(4, 8, 8, 16, 16, 4)),
        input_shapes=[(2, 3, 32, 32), (1, 3, 48, 64)],
        expected_shape=_seg_shape(7),
        invalid=[lambda: UNetPlusPlus(2, 3, 7, features=(4, 8))],
    ),
    NetCase(
        name="UNetPlusPlus-nuclei-deepsup",
        build=lambda: UNetPlusPlus(2, 3, 2, features=(4, 8, 8, 16, 16, 4), deep_supervision=True, dropout=0.0),
        input_shapes=[(1, 3, 32, 32), (2, 3, 16, 48)],
        expected_shape=_seg_shape(2),
    ),
    NetCase(
        name="UNet3Plus-small",
        build=lambda: UNet3Plus(2, 3, 7, features=(4, 8, 8, 16, 16), cat_channels=4),
        input_shapes=[(2, 3, 32, 32), (1, 3, 48, 64)],
        expected_shape=_seg_shape(7),
        invalid=[lambda: UNet3Plus(1, 3, 7), lambda: UNet3Plus(2, 0, 7), lambda: UNet3Plus(2, 3, 7, features=(4, 8)),
                 lambda: UNet3Plus(2, 3, 7, cat_channels=0)],
        script_train=True,
        onnx=True,
    ),
    NetCase(
        name="UNet3Plus-small-cgm",
        build=lambda: UNet3Plus(2, 3, 4, features=(4, 8, 8, 16), cat_channels=4, classification_guided=True,
                                cgm_dropout=0.0),
        input_shapes=[(2, 3, 32, 32), (1, 3, 16, 24)],
        expected_shape=_seg_shape(4),
        invalid=[lambda: UNet3Plus(2, 3, 4, classification_guided=True, cgm_dropout=1.0)],
        script_train=True,
    ),
    NetCase(
        name="UNet3Plus-small-3d-binary",
        build=lambda: UNet3Plus(3, 1, 1, features=(4, 4, 8, 8), cat_channels=2, deep_supervision=False),
        input_shapes=[(1, 1, 16, 16, 16), (2, 1, 8, 16, 24)],
        expected_shape=_seg_shape(1),
    ),
    NetCase(
        name="AttentionUnet-nuclei",
        build=lambda: AttentionUnet(2, 3, 7, channels=(4, 8, 16, 32, 64), strides=(2, 2, 2, 2)),
        input_shapes=[(2, 3, 32, 32), (1, 3, 48, 64)],
        expected_shape=_seg_shape(7),
        onnx=True,
    ),
]

