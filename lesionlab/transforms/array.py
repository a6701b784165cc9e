"""Array transforms of lesionlab: one image (channel first, NumPy or torch) in, the same kind out.

The 2.5D convention of the stroke networks (seed 002 §2.3): volumes are ``(C, H, W, D)`` with the slice axis last;
a 2.5D sample of slice ``i`` stacks slices ``i + o`` for ``o`` in ``offsets`` (default ``[-2, -1, 0, +1]``, i.e.
``[i-2, i-1, i, i+1]``) as channels, with zero images outside the volume, and its label is slice ``i``.
"""

from __future__ import annotations

import os
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
    "RegisterToTemplate",
    "ValidateHeader",
    "ValidateRGBTile",
    "ValidateTileFile",
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



def _with_affine(array: np.ndarray, like: NdarrayOrTensor, affine: np.ndarray) -> MetaTensor:
    """``array`` as a MetaTensor with the metadata and applied operations of ``like`` and a new ``affine``."""
    meta = {k: v for k, v in getattr(like, "meta", {}).items() if k != "affine"}
    ops = list(getattr(like, "applied_operations", []))
    return MetaTensor(torch.as_tensor(array), affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta,
                      applied_operations=ops)


class RegisterToTemplate(InvertibleTransform):
    """Bring a channel-first scan ``(C, x, y, z)`` from its native grid onto the model grid in MNI152 space.

    The scan (its first channel) is registered to the MNI152 template with
    :func:`lesionlab.transforms.registration.register_to_template` (affine, mutual information, multi-resolution,
    quality-checked: a failed registration raises a :class:`~lesionlab.errors.DataError`), then every channel is
    resampled (linear) onto the model grid ``grid_shape``/``grid_affine``. ``inverse`` maps data on the model grid
    (a prediction) back onto the native grid with the inverse affine (linear for floating-point data, nearest
    neighbour for integer labels), so ``Invertd`` returns predictions with the input's geometry.

    ``space``: ``"native"`` always registers; ``"mni"`` takes the scan as already registered (identity map; the scan
    is only resampled when its grid differs from the model grid); ``"auto"`` (default) registers unless the scan is
    already on the model grid (same shape, affine within 1e-3 mm), as ATLAS ``*_stx`` files are. What was done (mode,
    4x4 map, NCC, coverage, seconds) is pushed with the transform and, with ``record_dir``, written to
    ``<record_dir>/<file stem>_registration.json``.

    Args:
        template: template NIfTI (default: the 2 mm MNI152 template shipped with lesionlab; bundles name their own
            copy in ``resources/``).
        grid_shape: spatial shape of the model grid. Defaults to 197 x 233 x 189.
        grid_affine: its 4x4 RAS affine. Defaults to the 1 mm MNI152 grid of ATLAS R1.1.
        space: ``"auto"``, ``"native"`` or ``"mni"``.
        min_similarity: smallest accepted NCC with the template (see the registration module). Defaults to 0.4.
        min_coverage: smallest accepted covered fraction of the template brain. Defaults to 0.6.
        record_dir: folder for the registration record (``None``: no file).
        threads: SimpleITK threads (``None``: SimpleITK's default).
    """

    SPACES = ("auto", "native", "mni")

    def __init__(
        self,
        template: str | None = None,
        grid_shape: Sequence[int] | None = None,
        grid_affine: Sequence[Sequence[float]] | None = None,
        space: str = "auto",
        min_similarity: float = 0.4,
        min_coverage: float = 0.6,
        record_dir: str | None = None,
        threads: int | None = None,
    ) -> None:
        from .registration import MNI152_GRID_AFFINE, MNI152_GRID_SHAPE, MNI152_TEMPLATE

        if space not in self.SPACES:
            raise ValueError(f"space must be one of {self.SPACES}, got {space!r}.")
        self.template = template or MNI152_TEMPLATE
        self.grid_shape = tuple(int(s) for s in (grid_shape or MNI152_GRID_SHAPE))
        self.grid_affine = np.asarray(grid_affine if grid_affine is not None else MNI152_GRID_AFFINE, dtype=np.float64)
        if len(self.grid_shape) != 3 or self.grid_affine.shape != (4, 4):
            raise ValueError(f"grid_shape must give 3 sizes and grid_affine be 4x4, got {self.grid_shape} and "
                             f"{self.grid_affine.shape}.")
        self.space, self.min_similarity, self.min_coverage = space, float(min_similarity), float(min_coverage)
        self.record_dir, self.threads = record_dir, threads

    def _record(self, name: str, info: dict) -> None:
        import json

        from lesionlab.utils import atomic_write_text

        if not self.record_dir:
            return
        stem = os.path.basename(name)
        for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
        atomic_write_text(os.path.join(self.record_dir, f"{stem}_registration.json"), json.dumps(info, indent=2))

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        from .registration import (
            Registration,
            load_template,
            register_to_template,
            registration_quality,
            resample,
            same_grid,
        )

        if not isinstance(img, MetaTensor) or img.ndim != 4:
            raise ValueError("RegisterToTemplate needs a channel-first MetaTensor (C, x, y, z) with its affine (load "
                             f"it with LoadImage), got {type(img).__name__} of shape {tuple(img.shape)}.")
        name = ValidateVolume.name_of(img)
        data = img.detach().cpu().as_tensor().numpy()
        affine = img.affine.detach().cpu().numpy().astype(np.float64)
        on_grid = same_grid(data.shape[1:], affine, self.grid_shape, self.grid_affine)
        if self.space == "mni" or (self.space == "auto" and on_grid):
            tpl, tpl_affine = load_template(self.template)
            similarity, coverage = registration_quality(tpl, tpl_affine, data[0], affine, np.eye(4))
            reg = Registration(np.eye(4), similarity, coverage, 0.0, None, "identity")
        else:
            reg = register_to_template(data[0], affine, self.template, name, self.min_similarity, self.min_coverage,
                                       self.threads)
        resampled = not (reg.mode == "identity" and on_grid)
        out_arr = resample(data, affine, self.grid_shape, self.grid_affine, reg.world) if resampled else data
        out = _with_affine(out_arr, img, self.grid_affine)
        info = {"file": name, "space": self.space, "resampled": resampled, "native_shape": list(data.shape[1:]),
                "native_affine": affine.tolist(), "model_grid_shape": list(self.grid_shape),
                "model_grid_affine": self.grid_affine.tolist(), **reg.as_dict()}
        self.push_transform(out, orig_size=data.shape[1:], extra_info={k: info[k] for k in (
            "resampled", "native_affine", "world", "mode", "similarity", "coverage")})
        self._record(name, info)
        return out

    def apply_recorded(self, img: NdarrayOrTensor, reference: NdarrayOrTensor) -> NdarrayOrTensor:
        """Put ``img`` (a label on the reference's native grid) on the model grid with the map found for
        ``reference`` (the output of this transform): nearest neighbour for integer data, linear otherwise."""
        from monai.utils import TraceKeys

        from .registration import resample

        info = dict(reference.applied_operations[-1][TraceKeys.EXTRA_INFO])
        data = img.detach().cpu().as_tensor().numpy() if isinstance(img, MetaTensor) else np.asarray(img)
        floating = np.issubdtype(data.dtype, np.floating)
        out_arr = (resample(data, np.asarray(info["native_affine"]), self.grid_shape, self.grid_affine,
                            np.asarray(info["world"]), order=1 if floating else 0) if info["resampled"] else data)
        out = _with_affine(out_arr, img, self.grid_affine)
        self.push_transform(out, orig_size=data.shape[1:], extra_info=info)
        return out

    def inverse(self, data: NdarrayOrTensor) -> NdarrayOrTensor:
        from monai.utils import TraceKeys

        from .registration import resample

        transform = self.pop_transform(data)
        info, native_shape = transform[TraceKeys.EXTRA_INFO], tuple(int(s) for s in transform[TraceKeys.ORIG_SIZE])
        if not info["resampled"]:
            return data
        arr = data.detach().cpu().as_tensor().numpy() if isinstance(data, MetaTensor) else np.asarray(data)
        floating = np.issubdtype(arr.dtype, np.floating)
        back = resample(arr, self.grid_affine, native_shape, np.asarray(info["native_affine"]),
                        np.linalg.inv(np.asarray(info["world"], dtype=np.float64)), order=1 if floating else 0)
        if not isinstance(data, MetaTensor):
            return convert_to_dst_type(back, data)[0]
        return _with_affine(back, data, np.asarray(info["native_affine"]))



class ValidateHeader(Transform):
    """Check an image file's header before it is loaded (put it before ``LoadImage``); the path passes unchanged.

    :func:`lesionlab.data.headers.check_image_header`: declared voxel count, spacing > 0, orientation present (unless
    ``spacing`` is given), data length. Anything that is not a path (an image already in memory, as MONAI Label may
    pass) passes unchecked.

    Args:
        spacing: explicit spacing (mm) accepted for headers without orientation (``None``: such files are refused).
    """

    def __init__(self, spacing: Sequence[float] | None = None) -> None:
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def __call__(self, path):
        from lesionlab.data.headers import check_image_header

        if isinstance(path, (str, os.PathLike)):
            check_image_header(path, self.spacing)
        return path


class ValidateTileFile(Transform):
    """Check that an image tile file decodes before it is loaded (put it before ``LoadImage``); the path passes
    unchanged. A missing, truncated or non-image file raises a ``DataError`` naming it
    (:func:`lesionlab.data.tiles.check_tile_file`). Anything that is not a path passes unchecked.
    """

    def __call__(self, path):
        from lesionlab.data.tiles import check_tile_file

        if isinstance(path, (str, os.PathLike)):
            check_tile_file(path)
        return path


class ValidateRGBTile(Transform):
    """Check a loaded channel-first H&E tile ``(C, W, H)`` and return its RGB channels, or raise a ``DataError``.

    Accepts 3 channels (RGB) and 4 (RGBA: the alpha channel is dropped); refuses grey-scale or other channel counts,
    tiles smaller than ``min_size`` pixels a side and non-finite values, naming the file (from the MetaTensor's
    ``filename_or_obj``). Nothing is cropped or resized: the sliding-window inferer covers any tile size.

    Args:
        min_size: smallest accepted side in pixels. Defaults to 16.
    """

    def __init__(self, min_size: int = 16) -> None:
        self.min_size = int(min_size)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        from lesionlab.errors import DataError

        name = ValidateVolume.name_of(img, "<tile>")
        if img.ndim != 3:
            raise DataError(name, f"expected a 2D colour tile (C, W, H), got shape {tuple(img.shape)}")
        if img.shape[0] not in (3, 4):
            raise DataError(name, f"expected an RGB(A) H&E tile, got {img.shape[0]} channel(s)")
        if min(img.shape[1:]) < self.min_size:
            raise DataError(name, f"tile {tuple(img.shape[1:])} is smaller than {self.min_size} pixels a side")
        rgb = img[:3]
        finite = torch.isfinite(rgb).all() if isinstance(rgb, torch.Tensor) else np.isfinite(rgb).all()
        if not bool(finite):
            raise DataError(name, "tile holds NaN or infinite values")
        return rgb

