"""Chronic-stroke-like lesions that a model must tell from cerebrospinal fluid by more than intensity.

On T1-weighted MRI a chronic infarct is dark, but so are the ventricles and the sulci. What separates them in real
scans, and here:

- **location**: lesions lie in parenchyma (white matter, deep and cortical grey matter) and are placed at least
  ``margin`` voxels away from CSF and from the brain's border, so they never touch a ventricle or a sulcus
  (:func:`parenchyma_mask`);
- **intensity**: the cavity is hypointense but brighter than CSF (a fraction of the way from CSF to grey matter);
- **texture**: the core is mottled (fine-grained multiplicative noise), CSF is smooth;
- **border**: a gliotic / partial-volume rim of intermediate intensity inside the mask and a one-voxel halo outside
  it, instead of the sharp CSF-tissue edge; the outline itself is irregular (the carved blob).

:func:`paint_chronic_lesions` writes this appearance into an image in place.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["parenchyma_mask", "paint_chronic_lesions"]

#: Where the CSF / tissue threshold lies between the CSF and white-matter intensities.
_FLUID_LEVEL = 0.45
#: Range of the lesion core's intensity, as a fraction of the way from CSF to white matter.
_CORE_RANGE = (0.12, 0.32)


def parenchyma_mask(image: np.ndarray, brain: np.ndarray, csf: float, wm: float, margin: int = 2) -> np.ndarray:
    """Brain tissue at least ``margin`` voxels away from CSF (ventricles, sulci) and from the brain's border.

    Args:
        image: intensities (template scale: CSF about ``csf``, white matter about ``wm``).
        brain: brain mask.
        csf: CSF intensity.
        wm: white-matter intensity.
        margin: voxels of tissue kept between a lesion and any CSF or the brain border. Defaults to 2.

    Returns:
        Boolean mask of the voxels a lesion may occupy.
    """
    tissue = (np.asarray(brain) > 0) & (image > csf + _FLUID_LEVEL * (wm - csf))
    return ndi.binary_erosion(tissue, iterations=margin) if margin > 0 else tissue


def _fine_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return field / max(float(field.std()), 1e-6)


def paint_chronic_lesions(image: np.ndarray, lesions: list[np.ndarray], csf: float, wm: float,
                          rng: np.random.Generator) -> None:
    """Give the lesion voxels a chronic-infarct appearance, in place (see the module docstring).

    Per lesion region: core intensity ``csf + u * (wm - csf)`` with ``u`` in ``_CORE_RANGE`` (brighter than CSF),
    mottled by 10-18 % fine-grained noise; a rim of 1-2.5 voxels inside the mask rising to the mean of core and
    surrounding tissue; a one-voxel partial-volume halo outside the mask (a quarter of the way to the core).

    Args:
        image: float image (template scale), modified in place.
        lesions: boolean lesion masks shaped like ``image``.
        csf: CSF intensity.
        wm: white-matter intensity.
        rng: random generator.
    """
    if not lesions:
        return
    union = np.logical_or.reduce(lesions)
    idx = np.argwhere(union)
    lo = np.maximum(idx.min(axis=0) - 3, 0)
    hi = np.minimum(idx.max(axis=0) + 4, union.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    inside = union[box]
    region = image[box]
    tissue = ndi.gaussian_filter(region, 2.0)  # local tissue level, for the rim and the halo
    core = csf + rng.uniform(*_CORE_RANGE) * (wm - csf)
    core_img = core * (1.0 + rng.uniform(0.10, 0.18) * _fine_noise(rng, region.shape, rng.uniform(0.6, 1.0)))
    depth = ndi.distance_transform_edt(inside)  # 1 on the mask's border voxels
    rim = rng.uniform(1.0, 2.5)
    w = np.clip((depth - 1.0) / rim, 0.0, 1.0).astype(np.float32)  # 0 at the border -> 1 in the core
    rim_img = 0.5 * (core_img + tissue)
    out = np.where(inside, rim_img + w * (core_img - rim_img), region)
    halo = ~inside & (ndi.distance_transform_edt(~inside) <= 1.0)
    out = np.where(halo, 0.75 * region + 0.25 * core_img, out)
    image[box] = out.astype(image.dtype, copy=False)
