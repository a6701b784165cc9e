"""Synthetic brains for the stroke data sets: the MNI152 template deformed, biased, noised and given lesions.

* :func:`_generate_subject` builds one subject from the MNI152 (ICBM 2009a) T1 template that nilearn ships: its own
  smooth random deformation, a multiplicative bias field, Rician noise and one to three T1-hypointense,
  chronic-stroke-like lesions. The ATLAS and ISLES 2015 writers (``atlas.py``, ``isles.py``) use it.
* :func:`synth_volume_pair` returns a tiny brain-like volume and its lesion mask in memory, for unit tests.

The data are synthetic: for smoke tests, demos and pipeline checks, never for clinical use or for reporting
segmentation accuracy.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from lesionlab.data.synthetic.common import prepare_output_folder
from lesionlab.errors import DataError

__all__ = ["MNI152_NOTICE", "prepare_mni_output_folder", "save_mni_nifti", "synth_volume_pair"]

#: Copyright and permission notice of the MNI ICBM152 2009 templates, as published by the McConnell Brain Imaging
#: Centre. nilearn ships the template (``mni_icbm152_t1_tal_nlin_sym_09a``) without the notice text (its dataset
#: description lists the licence as "unknown"), so it is reproduced here and written next to every derived data set.
MNI152_NOTICE: str = (
    "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, "
    "McGill University. Permission to use, copy, modify, and distribute this software and its documentation for "
    "any purpose and without fee is hereby granted, provided that the above copyright notice appear in all copies. "
    "The authors and McGill University make no representations about the suitability of this software for any "
    'purpose. It is provided "as is" without express or implied warranty. The authors are not responsible for any '
    "data loss, equipment damage, property loss, or injury to subjects or patients resulting from the use or misuse "
    "of this software package."
)

#: Probability that a subject with two or more lesions gets its lesions split across two mask files (R1.1 only).
_SPLIT_PROBABILITY = 0.25
#: Range of the total lesion volume of a subject, in mL (log-uniform over the data set).
_LESION_ML_RANGE = (2.0, 100.0)
#: Largest lesion load as a fraction of the brain volume (keeps small test templates sane).
_MAX_LESION_FRACTION = 0.07
#: Smallest single lesion, in mL.
_MIN_LESION_ML = 0.5
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass(frozen=True)
class _Template:
    """A template brain prepared for subject generation (arrays are read-only)."""

    data: np.ndarray  # float32 intensities, brain tissue roughly in [0, 1]
    mask: np.ndarray  # uint8 brain mask, same shape
    affine: np.ndarray  # 4x4 voxel-to-world
    crop: tuple[slice, slice, slice]  # bounding box of the brain plus a margin for the deformation
    centers: np.ndarray  # (N, 3) voxel indices allowed as lesion centres
    csf: float  # intensity of cerebrospinal fluid
    wm: float  # intensity of white matter (90th percentile inside the brain)
    voxel_ml: float  # volume of one voxel in mL


@dataclass
class _Subject:
    """One generated subject, whole-volume arrays."""

    subject_id: str
    image: np.ndarray  # int16 scanner-like intensities
    brain_mask: np.ndarray  # uint8 warped brain mask
    lesions: list[np.ndarray]  # one boolean array per lesion, pairwise disjoint
    split: bool  # whether the lesions go to two mask files (R1.1)


def _prepare_template(data: np.ndarray, mask: np.ndarray, affine: np.ndarray, margin: int = 6) -> _Template:
    """Precompute everything that does not depend on the subject.

    Args:
        data: template intensities, brain tissue roughly in [0, 1].
        mask: brain mask of the template.
        affine: voxel-to-world matrix (world in mm, RAS).
        margin: voxels added around the brain bounding box (must exceed the largest displacement).

    Returns:
        The prepared template.
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    nz = np.argwhere((data > 0) | (mask > 0))
    lo = np.maximum(nz.min(axis=0) - margin, 0)
    hi = np.minimum(nz.max(axis=0) + margin + 1, data.shape)
    crop = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
    # lesion centres: well inside the brain, preferably lateral and supratentorial (MCA-territory-like)
    depth = max(1, min(6, int(0.06 * min(data.shape))))
    inner = ndi.binary_erosion(mask, iterations=depth)
    ijk = np.argwhere(inner)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    window = (np.abs(xyz[:, 0]) >= 12) & (np.abs(xyz[:, 0]) <= 60) & (xyz[:, 2] >= -15) & (xyz[:, 2] <= 55)
    if window.sum() >= max(50, 0.05 * len(ijk)):
        ijk = ijk[window]
    if len(ijk) == 0:
        ijk = np.argwhere(mask)
    inside = data[mask > 0]
    csf = float(np.percentile(inside, 1)) if inside.size else 0.25
    wm = float(np.percentile(inside, 90)) if inside.size else 1.0
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    for arr in (data, mask, ijk):
        arr.setflags(write=False)
    return _Template(data, mask, np.asarray(affine, dtype=np.float64), crop, ijk, csf, wm, voxel_ml)


@functools.lru_cache(maxsize=1)
def _template() -> _Template:
    """Load and prepare the MNI152 1 mm template bundled with nilearn (no download)."""
    from nilearn import datasets  # local import: nilearn is slow to import

    t1 = datasets.load_mni152_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    data = np.asarray(t1.get_fdata(dtype=np.float32))
    return _prepare_template(data, np.asarray(mask.dataobj), np.asarray(t1.affine))


def _upsample(low: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Linear upsampling of a coarse 3D grid to exactly ``shape`` (float32)."""
    factors = [s / g for s, g in zip(shape, low.shape)]
    out = ndi.zoom(low, factors, order=1, output=np.float32, mode="nearest")
    if out.shape != tuple(shape):  # zoom rounds the output shape; fix an off-by-one if it ever happens
        pad = [(0, max(0, s - o)) for s, o in zip(shape, out.shape)]
        out = np.pad(out, pad, mode="edge")[tuple(slice(0, s) for s in shape)]
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cell: float, sigma: float = 1.0) -> np.ndarray:
    """Smooth random field with unit standard deviation, correlation length about ``cell`` voxels."""
    low_shape = tuple(max(2, int(math.ceil(s / cell)) + 1) for s in shape)
    low = ndi.gaussian_filter(rng.standard_normal(low_shape).astype(np.float32), sigma, mode="wrap")
    low /= max(float(low.std()), 1e-6)
    return _upsample(low, shape)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3x3 rotation matrix."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _warp(tpl: _Template, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply a random smooth deformation (2-4 mm at most) to the template, inside its crop box."""
    shape = tuple(s.stop - s.start for s in tpl.crop)
    cell = 16.0
    low_shape = tuple(max(2, int(math.ceil(s / cell)) + 1) for s in shape)
    low = rng.standard_normal((3, *low_shape)).astype(np.float32)
    low = np.stack([ndi.gaussian_filter(c, 1.0, mode="nearest") for c in low])
    magnitude = float(np.sqrt((low**2).sum(axis=0)).max())
    low *= rng.uniform(2.0, 4.0) / max(magnitude, 1e-6)  # largest displacement in voxels (1 mm)
    coords = np.empty((3, *shape), dtype=np.float32)
    for axis in range(3):
        coords[axis] = _upsample(low[axis], shape)
        ramp = np.arange(tpl.crop[axis].start, tpl.crop[axis].stop, dtype=np.float32)
        coords[axis] += ramp.reshape([-1 if a == axis else 1 for a in range(3)])
    image = ndi.map_coordinates(tpl.data, coords, order=1, mode="constant", cval=0.0, output=np.float32)
    mask = ndi.map_coordinates(tpl.mask, coords, order=0, mode="constant", cval=0)
    return image, mask.astype(np.uint8)


def _carve_lesion(
    rng: np.random.Generator,
    allowed: np.ndarray,
    center: np.ndarray,
    n_voxels: int,
) -> np.ndarray | None:
    """Grow one irregular blob of about ``n_voxels`` voxels around ``center`` inside ``allowed``.

    The blob is a sub-level set of (ellipsoidal distance + smooth noise), optionally the union of two overlapping
    ellipsoids, cut to the allowed region; the level is chosen so the blob has the requested size. Only the largest
    connected piece is kept.

    Args:
        rng: random generator.
        allowed: boolean array of voxels the lesion may occupy.
        center: voxel index of the lesion centre.
        n_voxels: requested size.

    Returns:
        A boolean array shaped like ``allowed``, or None when there is no room around ``center``.
    """
    r_eq = (3.0 * n_voxels / (4.0 * math.pi)) ** (1.0 / 3.0)
    ratios = np.exp(rng.uniform(-0.35, 0.35, size=3))
    radii = r_eq * ratios / np.prod(ratios) ** (1.0 / 3.0)
    half = int(math.ceil(1.7 * radii.max() + 4))
    lo = np.maximum(center - half, 0)
    hi = np.minimum(center + half + 1, allowed.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    local_allowed = allowed[box]
    n_room = int(local_allowed.sum())
    if n_room < max(8, n_voxels // 2):
        return None
    shape = local_allowed.shape
    grids = np.meshgrid(*[np.arange(a, b, dtype=np.float32) - c for a, b, c in zip(lo, hi, center)], indexing="ij")
    offsets = np.stack(grids, axis=-1)  # (..., 3) voxel offsets from the centre
    rot = _random_rotation(rng).astype(np.float32)
    q = np.sqrt((((offsets @ rot) / radii.astype(np.float32)) ** 2).sum(axis=-1))
    if rng.random() < 0.5:  # second, smaller lobe for a less regular outline
        direction = rng.standard_normal(3)
        shift = (direction / np.linalg.norm(direction) * r_eq * rng.uniform(0.5, 0.9)).astype(np.float32)
        rot2 = _random_rotation(rng).astype(np.float32)
        radii2 = (radii * rng.uniform(0.5, 0.8)).astype(np.float32)
        q2 = np.sqrt(((((offsets - shift) @ rot2) / radii2) ** 2).sum(axis=-1))
        np.minimum(q, q2, out=q)
    del offsets, grids
    q += rng.uniform(0.2, 0.45) * _smooth_noise(rng, shape, cell=max(2.0, r_eq / 2.5))
    q += rng.uniform(0.05, 0.15) * _smooth_noise(rng, shape, cell=max(2.0, r_eq / 7.0))  # finer, ragged edge
    values = q[local_allowed]
    k = min(n_voxels, int(0.6 * n_room))
    if k < 1:
        return None
    level = np.partition(values, k - 1)[k - 1]
    blob = local_allowed & (q <= level)
    labels, n_parts = ndi.label(blob)
    if n_parts > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        blob = labels == int(sizes.argmax())
    out = np.zeros(allowed.shape, dtype=bool)
    out[box] = blob
    return out


def _paint_lesions(
    image: np.ndarray,
    lesions: list[np.ndarray],
    csf: float,
    rng: np.random.Generator,
) -> None:
    """Make the lesion voxels T1-hypointense (CSF-like) with a slightly soft edge, in place."""
    if not lesions:
        return
    union = np.logical_or.reduce(lesions)
    idx = np.argwhere(union)
    lo = np.maximum(idx.min(axis=0) - 4, 0)
    hi = np.minimum(idx.max(axis=0) + 5, union.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    soft = ndi.gaussian_filter(union[box].astype(np.float32), rng.uniform(0.6, 1.0))
    np.clip(soft * 1.25, 0.0, 1.0, out=soft)
    strength = rng.uniform(0.85, 1.0)
    level = csf * rng.uniform(1.0, 1.4) * (1.0 + 0.08 * _smooth_noise(rng, soft.shape, cell=4.0))
    region = image[box]
    image[box] = region * (1.0 - strength * soft) + strength * soft * level


def _bias_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth multiplicative field: exp of a random quadratic polynomial, within about +/-10-20 %."""
    axes = [np.linspace(-1.0, 1.0, s, dtype=np.float32) for s in shape]
    log_b = np.zeros(shape, dtype=np.float32)
    for exps in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1)]:
        term = np.float32(rng.standard_normal())
        factors = [ax**e if e else None for ax, e in zip(axes, exps)]
        part = np.ones((1, 1, 1), dtype=np.float32) * term
        for axis, f in enumerate(factors):
            if f is not None:
                part = part * f.reshape([-1 if a == axis else 1 for a in range(3)])
        log_b += part
    log_b -= float(log_b.mean())
    log_b *= rng.uniform(0.10, 0.18) / max(float(np.abs(log_b).max()), 1e-6)
    return np.exp(log_b)


def _rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Rician (magnitude) noise of standard deviation ``sigma`` per channel."""
    real = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imag * imag)


def _lesion_budget(tpl: _Template, seed: int, index: int, rng: np.random.Generator) -> list[int]:
    """Voxel counts of the lesions of one subject.

    The subject's total lesion volume is log-uniform over ``_LESION_ML_RANGE``: a golden-ratio sequence over the
    subject index (offset by the seed) spreads the totals evenly for any number of subjects, e.g. 2.5-90 mL for the
    first 12 subjects of seed 0.
    """
    offset = (0.5 + seed * 0.7548776662466927) % 1.0
    u = (offset + index * _GOLDEN) % 1.0
    lo, hi = _LESION_ML_RANGE
    total_ml = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    n_brain = int(tpl.mask.sum())
    total = min(int(round(total_ml / tpl.voxel_ml)), int(_MAX_LESION_FRACTION * n_brain))
    n_lesions = int(rng.integers(1, 4))
    n_lesions = max(1, min(n_lesions, int(total * tpl.voxel_ml / _MIN_LESION_ML)))
    fractions = np.sort(rng.dirichlet([4.0, 1.5, 1.0][:n_lesions]))[::-1]
    return [max(10, int(round(total * f))) for f in fractions]


def _generate_subject(tpl: _Template, seed: int, index: int) -> _Subject:
    """Build subject ``index`` of the data set seeded by ``seed`` (independent of the other subjects)."""
    meta_rng, warp_rng, lesion_rng, paint_rng, bias_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(6)
    )
    subject_id = f"{int(meta_rng.integers(0, 1_000_000)):06d}"
    budget = _lesion_budget(tpl, seed, index, meta_rng)
    split = bool(meta_rng.random() < _SPLIT_PROBABILITY) and len(budget) >= 2

    warped, mask_c = _warp(tpl, warp_rng)
    # lesions stay strictly inside the warped brain: two voxels away from its border
    allowed = ndi.binary_erosion(mask_c, iterations=2)
    lesions_c: list[np.ndarray] = []
    start = np.array([s.start for s in tpl.crop])
    for n_vox in budget:
        for _attempt in range(20):
            center = tpl.centers[int(lesion_rng.integers(len(tpl.centers)))] - start
            if not allowed[tuple(center)]:
                continue
            blob = _carve_lesion(lesion_rng, allowed, center, n_vox)
            if blob is not None and blob.sum() >= 0.5 * n_vox:
                break
        else:
            blob = None
        if blob is not None and blob.any():
            lesions_c.append(blob)
            allowed &= ~ndi.binary_dilation(blob, iterations=1)  # keep lesions apart
    if not lesions_c:  # pragma: no cover - only on degenerate templates
        raise DataError(None, "could not place any synthetic lesion inside the template brain mask")
    split = split and len(lesions_c) >= 2

    _paint_lesions(warped, lesions_c, tpl.csf, paint_rng)
    warped *= _bias_field(bias_rng, warped.shape)

    full = np.zeros(tpl.data.shape, dtype=np.float32)
    full[tpl.crop] = warped
    del warped
    full = _rician(full, noise_rng.uniform(0.015, 0.035) * tpl.wm, noise_rng)
    gain = noise_rng.uniform(700.0, 1100.0) / max(tpl.wm, 1e-6)
    image = np.clip(np.rint(full * gain), 0, np.iinfo(np.int16).max).astype(np.int16)

    brain = np.zeros(tpl.data.shape, dtype=np.uint8)
    brain[tpl.crop] = mask_c
    lesions = []
    for blob in lesions_c:
        arr = np.zeros(tpl.data.shape, dtype=bool)
        arr[tpl.crop] = blob
        lesions.append(arr)
    return _Subject(subject_id, image, brain, lesions, split)



def save_mni_nifti(array: np.ndarray, affine: np.ndarray, path: str) -> None:
    """Write ``array`` as NIfTI with an MNI-aligned qform/sform."""
    img = nib.Nifti1Image(array, affine)
    img.header.set_qform(affine, code=4)
    img.header.set_sform(affine, code=4)
    img.header.set_xyzt_units("mm")
    nib.save(img, path)


def prepare_mni_output_folder(out_dir: str | os.PathLike, readme: str) -> str:
    """Create a data set folder derived from the MNI152 template: README plus ``NOTICE_MNI152.txt``."""
    notice = (
        "The images in this folder are derived from the MNI ICBM152 2009a nonlinear symmetric T1 template\n"
        "(as distributed with nilearn), which is covered by the following notice:\n\n" + MNI152_NOTICE + "\n"
    )
    return prepare_output_folder(out_dir, readme, {"NOTICE_MNI152.txt": notice})


def _toy_brain(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoidal brain: grey-matter rim, white-matter core, two CSF ventricles. Intensities in [0, 1]."""
    grids = np.meshgrid(*[(np.arange(s, dtype=np.float32) - (s - 1) / 2) / (0.42 * s) for s in shape], indexing="ij")
    r = np.sqrt(sum(g * g for g in grids))
    brain = r <= 1.0
    image = np.where(brain, np.float32(0.85), np.float32(0.0))
    image[(r > 0.8) & brain] = 0.62
    for side in (-1.0, 1.0):
        vent = ((grids[0] - 0.18 * side) / 0.1) ** 2 + (grids[1] / 0.35) ** 2 + (grids[2] / 0.15) ** 2 <= 1.0
        image[vent] = 0.25
    return image.astype(np.float32), brain.astype(np.uint8)


def synth_volume_pair(
    shape: tuple[int, int, int] = (64, 64, 48),
    seed: int = 0,
    n_lesions: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """A tiny brain-like volume and its lesion mask, generated in memory in a few milliseconds.

    The "brain" is an ellipsoid with a grey-matter rim, a white-matter core and two CSF ventricles; each lesion is an
    irregular CSF-like (hypointense) blob strictly inside it, between about 0.3 % and 3 % of the brain volume. A mild
    bias field and Rician noise are added. No template is involved: use this in unit tests.

    Args:
        shape: volume shape (each side at least 16).
        seed: random seed; the same seed gives identical arrays.
        n_lesions: number of lesions (0 gives an empty mask).

    Returns:
        ``(image, mask)``: float32 intensities (white matter about 0.85) and a uint8 0/1 lesion mask.

    Raises:
        ValueError: for a shape that is not 3D or too small, or a negative ``n_lesions``.
    """
    if len(shape) != 3 or min(int(s) for s in shape) < 16:
        raise ValueError(f"shape must be 3 sides of at least 16 voxels, got {tuple(shape)}")
    dims = (int(shape[0]), int(shape[1]), int(shape[2]))
    if n_lesions < 0:
        raise ValueError(f"n_lesions must be >= 0, got {n_lesions}")
    rng = np.random.default_rng([seed, 0x7E57])
    image, brain = _toy_brain(dims)
    allowed = ndi.binary_erosion(brain, iterations=2)
    inner = np.argwhere(ndi.binary_erosion(brain, iterations=max(2, min(dims) // 8)))
    n_brain = int(brain.sum())
    lesions: list[np.ndarray] = []
    for _ in range(n_lesions):
        n_vox = int(n_brain * math.exp(rng.uniform(math.log(0.003), math.log(0.03))))
        for _attempt in range(20):
            center = inner[int(rng.integers(len(inner)))]
            if allowed[tuple(center)]:
                blob = _carve_lesion(rng, allowed, center, max(8, n_vox))
                if blob is not None and blob.any():
                    lesions.append(blob)
                    allowed &= ~ndi.binary_dilation(blob, iterations=1)
                    break
    _paint_lesions(image, lesions, 0.25, rng)
    image *= _bias_field(rng, dims)
    image = _rician(image, 0.02, rng).astype(np.float32)
    mask = np.logical_or.reduce(lesions).astype(np.uint8) if lesions else np.zeros(dims, dtype=np.uint8)
    return image, mask


# ---------------------------------------------------------------- ISLES 2015 SISS layout (appended for issue 3)


def synth_subject(seed: int = 0, index: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic subject in MNI152 space (as :func:`lesionlab.data.synthetic.synth_atlas` writes it), in memory.

    Returns:
        ``(image, lesion mask, affine)``: int16 T1-like intensities and a uint8 union of its lesions on the 1 mm
        MNI152 grid (197 x 233 x 189), and the grid's RAS affine.
    """
    tpl = _template()
    subject = _generate_subject(tpl, seed, index)
    mask = np.zeros(tpl.data.shape, dtype=np.uint8)
    for lesion in subject.lesions:
        mask[lesion] = 1
    return subject.image, mask, np.asarray(tpl.affine, dtype=np.float64)
