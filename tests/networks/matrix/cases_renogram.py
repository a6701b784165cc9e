"""Matrix entries for the renogram networks (seed 003): the Transformer-encoder U-net in both patch presets at small
widths, and the FCN-8s, SegNet and MONAI U-Net baselines of the comparison table."""

from __future__ import annotations

from monai.networks.nets import UNet

from lesionlab.networks.nets import FCN, SegNet, TransformerEncoderUNet
from tests.networks.matrix import NetCase

_SMALL = {"hidden_size": 32, "mlp_dim": 64, "num_layers": 4, "num_heads": 4, "decoder_channels": (16, 16, 8, 8)}


def _seg_shape(out_channels: int):
    return lambda s: (s[0], out_channels, *s[2:])


def _invalid():
    return [
        lambda: TransformerEncoderUNet(spatial_dims=1),
        lambda: TransformerEncoderUNet(img_size=100, patch_size=32),
        lambda: TransformerEncoderUNet(hidden_size=30, num_heads=4),
        lambda: TransformerEncoderUNet(decoder_channels=(8, 8, 8)),
        lambda: TransformerEncoderUNet(num_layers=4, skip_layers=(3, 2, 1, 9)),
        lambda: TransformerEncoderUNet(dropout_rate=1.0),
    ]


CASES = [
    NetCase(
        name="TransformerEncoderUNet-grid3x3-small",  # preset A: 3 x 3 patches at the training size
        build=lambda: TransformerEncoderUNet(2, 3, 1, img_size=96, patch_size=32, **_SMALL),
        input_shapes=[(2, 3, 96, 96), (1, 3, 64, 128)],  # the second size interpolates the position embedding
        expected_shape=_seg_shape(1),
        invalid=_invalid(),
        onnx=True,
    ),
    NetCase(
        name="TransformerEncoderUNet-patch16-small",  # preset B: 16-pixel patches
        build=lambda: TransformerEncoderUNet(2, 3, 1, img_size=64, patch_size=16, **_SMALL),
        input_shapes=[(2, 3, 64, 64), (1, 3, 48, 80)],
        expected_shape=_seg_shape(1),
        onnx=True,
    ),
    NetCase(
        name="TransformerEncoderUNet-3d-small",
        build=lambda: TransformerEncoderUNet(3, 1, 2, img_size=32, patch_size=16, **_SMALL),
        input_shapes=[(1, 1, 32, 32, 32), (1, 1, 16, 32, 48)],
        expected_shape=_seg_shape(2),
    ),
    NetCase(
        name="UNet-renogram-baseline-small",
        build=lambda: UNet(2, 3, 1, channels=(8, 16, 32, 64), strides=(2, 2, 2), num_res_units=2),
        input_shapes=[(2, 3, 64, 64), (1, 3, 48, 80)],
        expected_shape=_seg_shape(1),
        invalid=[lambda: UNet(2, 3, 1, channels=(8,), strides=(2,))],
    ),
    NetCase(
        name="FCN-8s-small",
        build=lambda: FCN(2, 3, 1, channels=(4, 8, 8, 16, 16), fc_channels=16, dropout=0.0),
        input_shapes=[(2, 3, 64, 64), (1, 3, 32, 96)],
        expected_shape=_seg_shape(1),
        invalid=[lambda: FCN(spatial_dims=4), lambda: FCN(channels=(8, 8)), lambda: FCN(dropout=1.0)],
    ),
    NetCase(
        name="SegNet-small",
        build=lambda: SegNet(2, 3, 1, channels=(4, 8, 8, 16, 16)),
        input_shapes=[(2, 3, 64, 64), (1, 3, 32, 96)],
        expected_shape=_seg_shape(1),
        invalid=[lambda: SegNet(spatial_dims=4), lambda: SegNet(convs_per_stage=(2, 2))],
    ),
]
