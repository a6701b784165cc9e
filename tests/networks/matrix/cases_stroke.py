"""Matrix entries for the stroke networks (seed 002)."""

from __future__ import annotations

from lesionlab.networks.nets import DUNet
from tests.networks.matrix import NetCase

_SMALL = {"features": (4, 8, 16, 32, 64), "fusion_reduction": 4}


def _seg_shape(out_channels: int):
    return lambda s: (s[0], out_channels, *s[2:])


CASES = [
    NetCase(
        name="DUNet-small",
        build=lambda: DUNet(**_SMALL),
        input_shapes=[(2, 4, 32, 32), (1, 4, 64, 48)],
        expected_shape=_seg_shape(1),
        invalid=[lambda: DUNet(spatial_dims=3), lambda: DUNet(in_channels=3)],
        onnx=True,
    ),
]
