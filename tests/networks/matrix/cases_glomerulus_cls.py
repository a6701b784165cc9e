"""Matrix entries for the glomerulus classifier (seed 004): the improved block and SEResNet50Improved A/B/C."""

from __future__ import annotations

from lesionlab.networks.blocks import ImprovedSEResBlock
from lesionlab.networks.nets import SEResNet50Improved
from tests.networks.matrix import NetCase

# small widths and one block per stage keep the matrix fast; the structure per reading is the full one
_SMALL = {"layers": (1, 2, 1, 1), "channels": (4, 8, 8, 16), "stem_channels": 8, "reduction": 4, "dropout_prob": 0.0}


def _cls_shape(classes: int):
    return lambda s: (s[0], classes)


def _block_case(reading: str, stride: int, spatial_dims: int = 2) -> NetCase:
    sizes = [(2, 8, 16, 16), (1, 8, 15, 22)] if spatial_dims == 2 else [(2, 8, 8, 8, 8), (1, 8, 7, 9, 6)]

    def shape(s):
        return (s[0], 16, *[(n - 1) // stride + 1 for n in s[2:]])

    return NetCase(
        name=f"ImprovedSEResBlock-{reading}-s{stride}-{spatial_dims}d",
        build=lambda: ImprovedSEResBlock(spatial_dims, 8, 16, width=4, reading=reading, stride=stride, reduction=4),
        input_shapes=sizes,
        expected_shape=shape,
        invalid=[
            lambda: ImprovedSEResBlock(2, 8, 16, reading="D"),
            lambda: ImprovedSEResBlock(2, 8, 16, reduction=32),
            lambda: ImprovedSEResBlock(2, 0, 16),
            lambda: ImprovedSEResBlock(4, 8, 16),
        ],
    )


CASES = [
    _block_case("A", 1),
    _block_case("B", 2),
    _block_case("C", 2),
    _block_case("B", 2, spatial_dims=3),
    *[
        NetCase(
            name=f"SEResNet50Improved-{reading}-small",
            build=lambda reading=reading: SEResNet50Improved(2, 3, 4, reading=reading, **_SMALL),
            input_shapes=[(2, 3, 64, 64), (1, 3, 48, 72)],
            expected_shape=_cls_shape(4),
            invalid=[
                lambda: SEResNet50Improved(2, 3, 4, reading="D"),
                lambda: SEResNet50Improved(2, 3, 4, layers=(3, 4, 6), channels=(64, 128, 256, 512)),
                lambda: SEResNet50Improved(2, 3, 0),
                lambda: SEResNet50Improved(2, 3, 4, dropout_prob=1.0),
                lambda: SEResNet50Improved(5, 3, 4),
            ],
            onnx=reading == "B",
        )
        for reading in "ABC"
    ],
    NetCase(
        name="SEResNet50Improved-B-3d",
        build=lambda: SEResNet50Improved(3, 1, 2, **_SMALL),
        input_shapes=[(2, 1, 32, 32, 32), (2, 1, 33, 40, 48)],
        expected_shape=_cls_shape(2),
    ),
]
