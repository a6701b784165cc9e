"""Voxel grids: resampling channel-first data from one grid to another through a world-space map.

Used by the registration to MNI152 space (:mod:`lesionlab.transforms.registration`) and by the synthetic scanner-space
DICOM series (:func:`lesionlab.data.synthetic.dicom_series.synth_head_dicom_series`). Affines are 4x4 RAS
voxel-to-world matrices.
"""

from __future__ import annotations

import numpy as np

__all__ = ["resample", "same_grid"]


def resample(
    array: np.ndarray,
    src_affine: np.ndarray,
    dst_shape: tuple[int, ...],
    dst_affine: np.ndarray,
    world: np.ndarray | None = None,
    order: int = 1,
) -> np.ndarray:
    """Resample channel-first ``array`` ``(C, x, y, z)`` from its grid onto another grid.

    The value at destination voxel ``v`` is read at source voxel ``inv(src_affine) @ world @ dst_affine @ v``
    (linear interpolation for ``order=1``, nearest neighbour for ``order=0``); points outside the source are 0.

    Args:
        array: source data, channel first.
        src_affine: 4x4 RAS affine of the source grid.
        dst_shape: spatial shape of the destination grid.
        dst_affine: 4x4 RAS affine of the destination grid.
        world: 4x4 RAS map from destination world points to source world points (default identity).
        order: 1 (linear) or 0 (nearest).

    Returns:
        ``(C, *dst_shape)`` float32 (``order=1``) or the source dtype (``order=0``).
    """
    from scipy import ndimage as ndi

    world = np.eye(4) if world is None else np.asarray(world, dtype=np.float64)
    vox = np.linalg.inv(np.asarray(src_affine, dtype=np.float64)) @ world @ np.asarray(dst_affine, dtype=np.float64)
    src = np.asarray(array)
    out_dtype = np.float32 if order else src.dtype
    out = np.empty((src.shape[0], *[int(s) for s in dst_shape]), dtype=out_dtype)
    for c in range(src.shape[0]):
        channel = src[c].astype(np.float32) if order else src[c]
        ndi.affine_transform(channel, vox[:3, :3], offset=vox[:3, 3], output_shape=out.shape[1:], output=out[c],
                             order=order, mode="constant", cval=0.0, prefilter=False)
    return out


def same_grid(shape_a, affine_a, shape_b, affine_b, tol: float = 1e-3) -> bool:
    """True when two grids have the same shape and affines within ``tol`` (mm)."""
    return tuple(int(s) for s in shape_a) == tuple(int(s) for s in shape_b) and bool(
        np.abs(np.asarray(affine_a, dtype=np.float64) - np.asarray(affine_b, dtype=np.float64)).max() <= tol)
