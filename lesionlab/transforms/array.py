"""Array transforms of lesionlab: one image (channel first, NumPy or torch) in, the same kind out.

The 2.5D convention of the stroke networks (seed 002 §2.3): volumes are ``(C, H, W, D)`` with the slice axis last;
a 2.5D sample of slice ``i`` stacks slices ``i + o`` for ``o`` in ``offsets`` (default ``[-2, -1, 0, +1]``, i.e.
``[i-2, i-1, i, i+1]``) as channels, with zero images outside the volume, and its label is slice ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, Randomizable, Resize, SpatialCrop, Transform
from monai.utils import convert_to_dst_type, convert_to_tensor

__all__ = [
    "NeighbourSliceStack",
    "InPlaneCropResize",
    "RandSlice25D",
    "MergeMasks",
    "ValidateVolume",
    "DEFAULT_OFFSETS",
    "stack_slices",
    "lesion_slices",
    "take_slices",
]

DEFAULT_OFFSETS: tuple[int, ...] = (-2, -1, 0, 1)


def _check_offsets(offsets: Sequence[int]) -> tuple[int, ...]:
    offsets = tuple(int(o) for o in offsets)
    if not offsets:
        raise ValueError("offsets must name at least one slice offset, e.g. (-2, -1, 0, 1).")
    return offsets


def stack_slices(volume: torch.Tensor, indices: torch.Tensor, offsets: Sequence[int]) -> torch.Tensor:
    """Gather 2.5D stacks from ``volume`` (B, C, H, W, D) for slice ``indices`` (n,) -> (B, n, C*K, H, W).

    Channel ``c * K + k`` of a stack is channel ``c`` of slice ``index + offsets[k]``; slices outside ``[0, D)`` are
    zero. Only the requested slices are copied, so memory is proportional to ``n``, not to ``D``.
    """
    depth = volume.shape[-1]
    parts = []
    for off in offsets:
        src = indices + off
        valid = (src >= 0) & (src < depth)
        sl = volume.index_select(-1, src.clamp(0, depth - 1))  # (B, C, H, W, n)
        sl = sl * valid.to(sl.dtype)
        parts.append(sl)
    st = torch.stack(parts, dim=2)  # (B, C, K, H, W, n)
    b, c, k, h, w, n = st.shape
    return st.permute(0, 5, 1, 2, 3, 4).reshape(b, n, c * k, h, w)


class NeighbourSliceStack(Transform):
    """Stack neighbouring slices as channels (the 2.5D input of D-UNet, AGMR-Net and TSRL-Net).

    ``__call__(img)`` on a ``(C, H, W, D)`` volume returns ``(C*K, H, W, D)`` (every slice's stack; K = number of
    offsets); ``__call__(img, index=i)`` returns the single stack ``(C*K, H, W)`` of slice ``i``.

    Args:
        offsets: slice offsets relative to the centre slice. Defaults to ``(-2, -1, 0, 1)``.
    """

    def __init__(self, offsets: Sequence[int] = DEFAULT_OFFSETS) -> None:
        self.offsets = _check_offsets(offsets)

    def __call__(self, img: NdarrayOrTensor, index: int | None = None) -> NdarrayOrTensor:
        if img.ndim != 4:
            raise ValueError(f"expected a channel-first volume (C, H, W, D), got shape {tuple(img.shape)}.")
        vol = convert_to_tensor(img, track_meta=False)
        depth = vol.shape[-1]
        if index is None:
            idx = torch.arange(depth, device=vol.device)
        else:
            if not 0 <= index < depth:
                raise IndexError(f"slice index {index} is outside the volume's {depth} slices.")
            idx = torch.tensor([index], device=vol.device)
        st = stack_slices(vol[None], idx, self.offsets)[0]  # (n, C*K, H, W)
        out = st.permute(1, 2, 3, 0) if index is None else st[0]
        if isinstance(img, MetaTensor) and index is None:
            return MetaTensor(out, meta=img.meta, applied_operations=img.applied_operations)
        return convert_to_dst_type(out, img if not isinstance(img, MetaTensor) else img.as_tensor())[0]


class InPlaneCropResize(InvertibleTransform):
    """Crop a fixed in-plane window of every slice, then resize it; invertible back to the original grid.

    The thesis (seed 002 §2.3) crops each 233x197 ATLAS slice to 180x180 and resizes it to 192x192. On the array of
    an ATLAS R1.1 volume (197 x 233 x 189, axes x, y, z) D-UNet's window is x in [10, 190) and y in [40, 220), the
    defaults here. The slice axis (last) is left untouched. ``inverse`` resizes back to the window and pads with
    zeros to the original size, so predictions return to the input grid (MONAI's own invertible ``SpatialCrop`` and
    ``Resize`` do the work, so ``Invertd`` can undo it too).

    Args:
        roi_start: in-plane start of the window (first two spatial axes). Defaults to ``(10, 40)``.
        roi_end: in-plane end (exclusive). Defaults to ``(190, 220)``.
        spatial_size: in-plane output size. Defaults to ``(192, 192)``.
        mode: interpolation mode of the resize (``"bilinear"`` for images, ``"nearest"`` for labels).
    """

    def __init__(
        self,
        roi_start: Sequence[int] = (10, 40),
        roi_end: Sequence[int] = (190, 220),
        spatial_size: Sequence[int] = (192, 192),
        mode: str = "bilinear",
    ) -> None:
        if len(roi_start) != 2 or len(roi_end) != 2 or len(spatial_size) != 2:
            raise ValueError("roi_start, roi_end and spatial_size must each give 2 in-plane values.")
        if any(s < 0 or e <= s for s, e in zip(roi_start, roi_end)):
            raise ValueError(f"invalid in-plane window: roi_start={tuple(roi_start)}, roi_end={tuple(roi_end)}.")
        self.roi_start, self.roi_end = tuple(roi_start), tuple(roi_end)
        self.cropper = SpatialCrop(roi_slices=[slice(roi_start[0], roi_end[0]), slice(roi_start[1], roi_end[1])])
        align = None if mode in ("nearest", "nearest-exact", "area") else False
        self.resizer = Resize(spatial_size=(*spatial_size, -1), mode=mode, align_corners=align)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if img.ndim != 4:
            raise ValueError(f"expected a channel-first volume (C, H, W, D), got shape {tuple(img.shape)}.")
        for ax, end in enumerate(self.roi_end):
            if img.shape[ax + 1] < end:
                raise ValueError(
                    f"in-plane window ends at {end} on axis {ax} but the image has only {img.shape[ax + 1]} voxels "
                    f"there (shape {tuple(img.shape[1:])}); set roi_start/roi_end for this data."
                )
        return self.resizer(self.cropper(img))

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        return self.cropper.inverse(self.resizer.inverse(data))


class RandSlice25D(Randomizable, Transform):
    """Draw ``num_samples`` distinct 2.5D training samples (stack, centre-slice label) from one volume.

    The sampled ("fast") training protocol of the stroke bundles. The number of samples centred on a lesion slice
    is binomial with probability ``pos_fraction`` (at most the number of lesion slices); the others are drawn
    uniformly from the remaining slices. Slices are drawn **without replacement**, so a volume of ``D`` slices gives
    at most ``D`` samples (``num_samples >= D`` yields every slice once, in random order) -- the thesis's protocol
    (every slice of every volume once per epoch) is :class:`lesionlab.pipelines.slices.Slice25DSampler`'s
    ``"all"`` mode.

    Args:
        num_samples: samples per volume (capped at the volume's number of slices).
        pos_fraction: expected fraction of samples centred on a lesion slice. Defaults to 0.5.
        offsets: slice offsets of the stack. Defaults to ``(-2, -1, 0, 1)``.
    """

    def __init__(self, num_samples: int = 8, pos_fraction: float = 0.5, offsets: Sequence[int] = DEFAULT_OFFSETS):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
        if not 0.0 <= pos_fraction <= 1.0:
            raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}.")
        self.num_samples, self.pos_fraction = num_samples, pos_fraction
        self.stacker = NeighbourSliceStack(offsets)
        self.indices: list[int] = []

    def randomize(self, depth: int, positive: Sequence[int]) -> None:
        n = min(self.num_samples, int(depth))
        positive = np.unique(np.asarray(positive, dtype=np.int64))
        n_pos = min(int(self.R.binomial(n, self.pos_fraction)), len(positive))
        chosen = self.R.choice(positive, size=n_pos, replace=False) if n_pos else np.zeros(0, dtype=np.int64)
        rest = np.setdiff1d(np.arange(depth), chosen)
        others = self.R.choice(rest, size=n - n_pos, replace=False)
        self.indices = [int(i) for i in self.R.permutation(np.concatenate([chosen, others]))]

    def __call__(
        self, img: NdarrayOrTensor, label: NdarrayOrTensor | None = None, randomize: bool = True
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        if randomize:
            self.randomize(img.shape[-1], [] if label is None else lesion_slices(label))
        return take_slices(self.stacker, img, label, self.indices)


def lesion_slices(label: NdarrayOrTensor) -> list[int]:
    """Indices of the slices (last axis) of a ``(C, H, W, D)`` label volume that contain foreground."""
    lab = convert_to_tensor(label, track_meta=False)
    return torch.nonzero(lab.reshape(-1, lab.shape[-1]).amax(0) > 0).flatten().tolist()


def take_slices(
    stacker: NeighbourSliceStack, img: NdarrayOrTensor, label: NdarrayOrTensor | None, indices: Sequence[int]
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """The 2.5D stack ``(C*K, H, W)`` and label slice ``(C, H, W)`` (None without label) of each slice index."""
    lab = None if label is None else convert_to_tensor(label, track_meta=False)
    return [(convert_to_tensor(stacker(img, index=int(i)), track_meta=False), None if lab is None else lab[..., int(i)])
            for i in indices]


class MergeMasks(Transform):
    """Merge several lesion masks stacked as channels ``(M, ...)`` into one binary mask ``(1, ...)``.

    ATLAS R1.1 stores some subjects' lesions in several files (``*_LesionSmooth_stx``, ``*_LesionSmooth_1_stx``...);
    their union is the subject's label. Values > ``threshold`` count as lesion.
    """

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if isinstance(img, np.ndarray):
            return (img > self.threshold).any(axis=0, keepdims=True).astype(np.float32)
        out = (img > self.threshold).any(dim=0, keepdim=True).to(torch.float32)
        if isinstance(img, MetaTensor):
            return MetaTensor(out.as_tensor() if isinstance(out, MetaTensor) else out, meta=img.meta,
                              applied_operations=img.applied_operations)
        return out


class ValidateVolume(Transform):
    """Check a loaded channel-first volume ``(C, H, W, D)`` and pass it through unchanged, or raise a ``DataError``.

    The checks of :func:`lesionlab.data.validation.check_volume` (3D, voxels present, finite values, valid affine, not
    constant for images, values in ``label_values`` for labels) and, given a ``reference`` image, of
    :func:`~lesionlab.data.validation.check_same_grid` (same spatial shape, affines within ``tol`` mm). The error
    names the file from the MetaTensor's ``filename_or_obj``. Put it right after ``EnsureChannelFirst`` so that
    broken inputs are reported before any resampling hides the problem.

    Args:
        kind: ``"image"`` or ``"label"``. Defaults to ``"image"``.
        label_values: allowed label values (``None``: any). Defaults to ``(0, 1)``.
        channels: expected number of channels (``None``: any), e.g. 1 to reject 4D series. Defaults to None.
        tol: affine tolerance (mm) against the reference. Defaults to 1e-3.
    """

    def __init__(self, kind: str = "image", label_values: Sequence[float] | None = (0, 1), channels: int | None = None,
                 tol: float = 1e-3) -> None:
        if kind not in ("image", "label"):
            raise ValueError(f"kind must be 'image' or 'label', got {kind!r}.")
        self.kind, self.channels, self.tol = kind, channels, tol
        self.label_values = None if label_values is None else tuple(label_values)

    @staticmethod
    def name_of(img: NdarrayOrTensor, default: str = "<array>") -> str:
        """The source file of ``img`` (first one for several stacked files), else ``default``."""
        meta = getattr(img, "meta", None) or {}
        name = meta.get("filename_or_obj", default)
        if isinstance(name, (list, tuple)):
            name = name[0] if name else default
        return str(name)

    def __call__(self, img: NdarrayOrTensor, reference: NdarrayOrTensor | None = None) -> NdarrayOrTensor:
        from lesionlab.data.validation import check_same_grid, check_volume

        name = self.name_of(img)
        affine = getattr(img, "affine", None)
        check_volume(img, affine, name, kind=self.kind, label_values=self.label_values, channel_first=True,
                     channels=self.channels)
        if reference is not None:
            check_same_grid(img.shape[1:], affine, reference.shape[1:], getattr(reference, "affine", None), name,
                            self.name_of(reference), tol=self.tol)
        return img

