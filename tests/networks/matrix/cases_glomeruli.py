"""Matrix entries for the glomerulus segmentation network (seed 000): PSPNet / CBAM-PSPNet, both decoders."""

from __future__ import annotations

from lesionlab.networks.nets import PSPNetCBAM
from tests.networks.matrix import NetCase

_SMALL = {"layers": (1, 1, 2, 1), "width": 8, "ppm_channels": 8, "head_channels": 16, "aux_channels": 8,
          "cbam_reduction": 4, "dropout": 0.0}


def _seg_shape(out_channels: int):
    return lambda s: (s[0], out_channels, *s[2:])


_INVALID = [
    lambda: PSPNetCBAM(spatial_dims=1),
    lambda: PSPNetCBAM(decoder="unet"),
    lambda: PSPNetCBAM(layers=(3, 4, 6)),
    lambda: PSPNetCBAM(cbam_stages=(5,)),
    lambda: PSPNetCBAM(out_channels=0),
    lambda: PSPNetCBAM(dropout=1.0),
]

CASES = [
    NetCase(
        name=f"PSPNetCBAM-{decoder}-{'cbam' if cbam else 'plain'}",
        build=lambda cbam=cbam, decoder=decoder: PSPNetCBAM(2, 3, 2, cbam=cbam, decoder=decoder, **_SMALL),
        input_shapes=[(2, 3, 64, 64), (2, 3, 72, 56)],
        expected_shape=_seg_shape(2),
        invalid=_INVALID,
        script_train=True,
        onnx=decoder == "psp",
    )
    for cbam in (True, False)
    for decoder in ("psp", "skip")
] + [
    NetCase(
        name="PSPNetCBAM-3d",
        build=lambda: PSPNetCBAM(3, 1, 3, **_SMALL),
        input_shapes=[(2, 1, 32, 32, 32), (2, 1, 40, 32, 48)],
        expected_shape=_seg_shape(3),
    ),
]
