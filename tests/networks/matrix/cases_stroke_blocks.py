"""Matrix entries for the stroke papers' blocks (seed 002), in 2D and 3D where the block is dimension-generic.

Blocks with several inputs list one shape per input; the attention blocks return ``(feature, attention logits)``
(``outputs=2``). The per-block test files keep the equations (hand computations) and parameter counts.
"""

from __future__ import annotations

from lesionlab.networks.blocks import (
    AddFusion,
    CFFConcatFusion,
    CoarsePatchAttention,
    CoarseResidualLearning,
    ConcatFusion,
    CrossDimensionFusion,
    DimensionTransform,
    DoubleConv,
    FineSpatialAttention,
    MultiScaleConv,
    MultiScaleDeconvUpsample,
    SEAddFusion,
    SqueezeExcitation,
    UpConv,
)
from tests.networks.matrix import NetCase


def _channels(c: int, scale: int = 1):
    """Output shape with ``c`` channels and every spatial size multiplied by ``scale``."""
    return lambda s: (s[0], c, *(n * scale for n in s[2:]))


def _fused(c: int):
    """Output of a 2D/3D fusion: the 2D input's shape with ``c`` channels."""
    return lambda shapes: (shapes[1][0], c, *shapes[1][2:])


_FUSION_SIZES = [((2, 8, 2, 12, 10), (2, 8, 12, 10)), ((1, 8, 2, 6, 6), (1, 8, 6, 6))]


def _fusion(name: str, build, invalid=()) -> NetCase:
    return NetCase(name=name, build=build, input_shapes=_FUSION_SIZES, expected_shape=_fused(8), invalid=invalid)


CASES = [
    NetCase(name="DoubleConv-2D", build=lambda: DoubleConv(2, 3, 4, dropout=0.2),
            input_shapes=[(2, 3, 8, 8), (1, 3, 5, 7)], expected_shape=_channels(4),
            invalid=[lambda: DoubleConv(2, 3, 4, dropout=1.0)]),
    NetCase(name="DoubleConv-3D", build=lambda: DoubleConv(3, 1, 4), input_shapes=[(2, 1, 4, 8, 8), (1, 1, 3, 5, 7)],
            expected_shape=_channels(4)),
    NetCase(name="UpConv-2D", build=lambda: UpConv(2, 4, 2), input_shapes=[(2, 4, 4, 4), (1, 4, 3, 5)],
            expected_shape=_channels(2, scale=2), invalid=[lambda: UpConv(2, 4, 2, kernel_size=2)]),
    NetCase(name="UpConv-3D", build=lambda: UpConv(3, 4, 2), input_shapes=[(2, 4, 2, 4, 4), (1, 4, 3, 2, 5)],
            expected_shape=_channels(2, scale=2)),
    NetCase(name="DimensionTransform", build=lambda: DimensionTransform(8, 2, 4),
            input_shapes=[(2, 8, 2, 6, 6), (1, 8, 2, 5, 9)], expected_shape=lambda s: (s[0], 4, *s[3:]),
            invalid=[lambda: DimensionTransform(0, 2, 4)]),
    NetCase(name="SqueezeExcitation-2D", build=lambda: SqueezeExcitation(2, 16, 4), input_shapes=[(2, 16, 5, 5),
            (1, 16, 3, 7)], expected_shape=_channels(16), invalid=[lambda: SqueezeExcitation(2, 16, 32)]),
    NetCase(name="SqueezeExcitation-3D-bias", build=lambda: SqueezeExcitation(3, 16, 4, bias=True),
            input_shapes=[(2, 16, 4, 4, 4), (1, 16, 2, 3, 5)], expected_shape=_channels(16)),
    _fusion("SEAddFusion", lambda: SEAddFusion(8, 2, 4), invalid=[lambda: SEAddFusion(8, 2, 16)]),
    _fusion("CrossDimensionFusion-separate", lambda: CrossDimensionFusion(8, 2, 4, "separate"),
            invalid=[lambda: CrossDimensionFusion(8, 2, 4, "joint"), lambda: CrossDimensionFusion(8, 2, 16)]),
    _fusion("CrossDimensionFusion-shared", lambda: CrossDimensionFusion(8, 2, 4, "shared")),
    _fusion("AddFusion", lambda: AddFusion(8, 2)),
    _fusion("ConcatFusion", lambda: ConcatFusion(8, 2)),
    _fusion("CFFConcatFusion", lambda: CFFConcatFusion(8, 2, 4)),
    NetCase(name="MultiScaleDeconvUpsample-2D", build=lambda: MultiScaleDeconvUpsample(2, 8, 8, (3, 5, 7, 9)),
            input_shapes=[(2, 8, 4, 4), (1, 8, 3, 5)], expected_shape=_channels(8, scale=2),
            invalid=[lambda: MultiScaleDeconvUpsample(2, 8, 6, (3, 5, 7, 9)),
                     lambda: MultiScaleDeconvUpsample(2, 8, 8, (3, 4))]),
    NetCase(name="MultiScaleDeconvUpsample-3D", build=lambda: MultiScaleDeconvUpsample(3, 4, 4, (3, 5)),
            input_shapes=[(2, 4, 2, 4, 4), (1, 4, 3, 2, 3)], expected_shape=_channels(4, scale=2)),
    NetCase(name="MultiScaleConv-2D", build=lambda: MultiScaleConv(2, 8, 8, (3, 5, 7, 9)),
            input_shapes=[(2, 8, 6, 6), (1, 8, 5, 9)], expected_shape=_channels(8),
            invalid=[lambda: MultiScaleConv(2, 8, 8, (3, 5, 7, 9), dropout=1.0)]),
    NetCase(name="MultiScaleConv-3D", build=lambda: MultiScaleConv(3, 4, 4, (3,)),
            input_shapes=[(2, 4, 4, 4, 4), (1, 4, 3, 5, 2)], expected_shape=_channels(4)),
    NetCase(name="CoarsePatchAttention-2D", build=lambda: CoarsePatchAttention(2, 6),
            input_shapes=[(2, 4, 12, 18), (1, 1, 6, 6)],
            expected_shape=lambda s: [tuple(s), (s[0], 1, 6, 6)], outputs=2,
            invalid=[lambda: CoarsePatchAttention(4), lambda: CoarsePatchAttention(grid=0)]),
    NetCase(name="CoarsePatchAttention-3D", build=lambda: CoarsePatchAttention(3, 2),
            input_shapes=[(2, 3, 4, 6, 8), (1, 1, 2, 2, 4)],
            expected_shape=lambda s: [tuple(s), (s[0], 1, 2, 2, 2)], outputs=2),
    NetCase(name="FineSpatialAttention-2D", build=lambda: FineSpatialAttention(2),
            input_shapes=[(2, 3, 12, 10), (1, 5, 7, 9)],
            expected_shape=lambda s: [tuple(s), (s[0], 1, *s[2:])], outputs=2,
            invalid=[lambda: FineSpatialAttention(kernel_size=4), lambda: FineSpatialAttention(4)]),
    NetCase(name="FineSpatialAttention-3D", build=lambda: FineSpatialAttention(3, kernel_size=3, bias=True),
            input_shapes=[(1, 2, 4, 6, 5), (2, 3, 3, 3, 3)],
            expected_shape=lambda s: [tuple(s), (s[0], 1, *s[2:])], outputs=2),
    # parameter-free (backward=False): shape, TorchScript and errors here; input gradients in its own test file
    *[NetCase(name=f"CoarseResidualLearning-{mode}", build=lambda mode=mode: CoarseResidualLearning(mode),
              input_shapes=[((2, 4, 12, 18), (2, 1, 12, 18), (2, 1, 6, 6)),
                            ((1, 3, 4, 6, 8), (1, 1, 4, 6, 8), (1, 1, 2, 2, 2))],
              expected_shape=lambda s: tuple(s[0]), invalid=[lambda: CoarseResidualLearning("both")], backward=False)
      for mode in ("crl", "ra", "pa")],
]
