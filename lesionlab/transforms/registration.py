"""Affine registration of a head MRI to the MNI152 template, and resampling between a native grid and a model grid.

The stroke bundles are trained on volumes in MNI152 space (ATLAS R1.1 ``*_stx`` images: 197 x 233 x 189 voxels of
1 mm). A hospital scan is in scanner space: any orientation, voxel size and field of view. :func:`register_to_template`
finds the affine map between the scan and the template, :func:`resample` brings voxel data from one grid to another
through such a map (and back), and :func:`lesionlab.transforms.RegisterToTemplate` wraps both as an invertible MONAI
transform.

Method (documented numbers; all in :data:`REGISTRATION_SETTINGS`):

* fixed image: the MNI152 ICBM 2009a nonlinear symmetric T1 template at 2 mm (99 x 117 x 95, brain only; shipped as
  ``lesionlab/resources/mni152_t1_2mm.nii.gz`` and copied into each bundle's ``resources/``, with its notice);
  moving image: the scan, smoothed with a Gaussian (FWHM = the missing resolution) and resampled to voxels of at
  least 2 mm so that thin-slice or 0.2 mm in-plane scans cost no more than the template;
* metric: Mattes mutual information (32 histogram bins) on a fixed random 16 % of the template voxels inside the
  template brain dilated by 10 mm (seeded, so a rerun gives the same result; the mask keeps the scan's skull and neck
  out of the metric, which made the result on a scan with skull (Colin27) ten times more repeatable: 0.26 mm instead
  of 2.6 mm between a scan and a moved copy); linear interpolation; regular-step gradient descent with scales from
  physical shifts;
* stages: centre-of-mass (image moments) initialisation, then a rigid (6 parameters) registration over 3 resolution
  levels (shrink 4, 2, 1; smoothing 4, 2, 0 mm), then a full affine (12 parameters) one over 2 levels (shrink 2, 1;
  smoothing 2, 0 mm), starting from the rigid result;
* quality: the normalised cross-correlation (NCC) between the template and the registered scan over the template's
  brain voxels that the scan covers, and that coverage itself (the fraction of the template brain inside the scan's
  field of view). A registration below ``min_similarity`` or ``min_coverage`` is refused with a
  :class:`~lesionlab.errors.DataError`, never used.

Coordinates: matrices here are 4x4 in RAS world coordinates (nibabel/MONAI convention); SimpleITK works in LPS and
is converted at the boundary. ``world`` maps a point of the model (template) space to the point of the native scan
that lies there (the direction in which images are resampled onto the model grid); its inverse maps predictions
back.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lesionlab.data.grid import resample, same_grid
from lesionlab.errors import DataError
from lesionlab.resources import MNI152_TEMPLATE_PATH

__all__ = [
    "MNI152_TEMPLATE",
    "MNI152_GRID_SHAPE",
    "MNI152_GRID_AFFINE",
    "REGISTRATION_SETTINGS",
    "Registration",
    "register_to_template",
    "registration_quality",
    "load_template",
    "resample",
    "same_grid",
]

logger = logging.getLogger(__name__)

#: the 2 mm MNI152 2009a T1 template (uint8, brain only); notice in ``NOTICE_MNI152.txt`` beside it
MNI152_TEMPLATE = MNI152_TEMPLATE_PATH
#: the model grid of the stroke bundles: ATLAS R1.1 / nilearn MNI152 1 mm (voxels and RAS affine)
MNI152_GRID_SHAPE: tuple[int, int, int] = (197, 233, 189)
MNI152_GRID_AFFINE: tuple[tuple[float, ...], ...] = (
    (1.0, 0.0, 0.0, -98.0), (0.0, 1.0, 0.0, -134.0), (0.0, 0.0, 1.0, -72.0), (0.0, 0.0, 0.0, 1.0),
)
#: every number of the registration method (see the module docstring)
REGISTRATION_SETTINGS: dict[str, Any] = {
    "metric": "Mattes mutual information",
    "histogram_bins": 32,
    "sampling": "random, inside the template brain dilated by 10 mm (skull and neck of the scan stay outside)",
    "brain_threshold": 25,
    "mask_dilation_voxels": 5,
    "sampling_fraction": 0.16,
    "sampling_seed": 1,
    "moving_min_spacing_mm": 2.0,
    "initialisation": "image moments (centres of mass and principal axes aligned)",
    "rigid": {"shrink": [4, 2, 1], "smoothing_mm": [4.0, 2.0, 0.0], "iterations": 100},
    "affine": {"shrink": [2, 1], "smoothing_mm": [2.0, 0.0], "iterations": 100},
    "optimizer": "regular step gradient descent (learning rate 1.0, minimum step 1e-3, relaxation 0.6)",
    "quality": "normalised cross-correlation over the covered template brain voxels",
}
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)


@dataclass
class Registration:
    """Result of :func:`register_to_template`.

    Attributes:
        world: 4x4 RAS matrix mapping a template (model-space) point to the native point that lies there.
        similarity: NCC between the template and the registered scan over the covered brain voxels (-1 .. 1).
        coverage: fraction of the template's brain voxels inside the scan's field of view (0 .. 1).
        seconds: wall time of the registration.
        mutual_information: final Mattes MI metric value (negative; lower is better).
        mode: ``"registered"`` (affine found) or ``"identity"`` (``space="mni"``: the scan is taken as in MNI space).
        settings: the method's numbers (:data:`REGISTRATION_SETTINGS`).
    """

    world: np.ndarray
    similarity: float
    coverage: float
    seconds: float
    mutual_information: float | None = None
    mode: str = "registered"
    settings: dict[str, Any] = field(default_factory=lambda: dict(REGISTRATION_SETTINGS))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["world"] = np.asarray(self.world, dtype=float).round(6).tolist()
        d["similarity"], d["coverage"], d["seconds"] = (round(float(v), 4) for v in (self.similarity, self.coverage,
                                                                                    self.seconds))
        return d


def _to_sitk(array: np.ndarray, affine: np.ndarray):
    """A 3D ``(x, y, z)`` array and its RAS affine as a float32 SimpleITK image (LPS geometry)."""
    import SimpleITK as sitk

    a = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    lps = _LPS @ a
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(np.asarray(array, dtype=np.float32), (2, 1, 0))))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing[None, :]).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def _downsample(image, min_spacing: float):
    """``image`` smoothed and resampled to voxels of at least ``min_spacing`` mm (same orientation and extent)."""
    import SimpleITK as sitk

    spacing = np.asarray(image.GetSpacing(), dtype=float)
    new = np.maximum(spacing, min_spacing)
    if np.allclose(new, spacing):
        return image
    sigma = np.sqrt(np.maximum(new**2 - spacing**2, 0.0)) / 2.3548  # FWHM of the missing resolution
    smooth = sitk.SmoothingRecursiveGaussian(image, [float(max(s, 1e-3)) for s in sigma])
    size = np.maximum(1, np.ceil(np.asarray(image.GetSize()) * spacing / new)).astype(int)
    return sitk.Resample(smooth, [int(s) for s in size], sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         new.tolist(), image.GetDirection(), 0.0, sitk.sitkFloat32)


def _run_stage(fixed, moving, transform, stage: dict[str, Any], mask=None) -> float:
    import SimpleITK as sitk

    s = REGISTRATION_SETTINGS
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=s["histogram_bins"])
    if mask is not None:
        method.SetMetricFixedMask(mask)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(s["sampling_fraction"], s["sampling_seed"])
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3,
                                                   numberOfIterations=stage["iterations"], relaxationFactor=0.6,
                                                   gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(stage["shrink"])
    method.SetSmoothingSigmasPerLevel(stage["smoothing_mm"])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return float(method.GetMetricValue())


def _matrix_ras(transform) -> np.ndarray:
    """4x4 RAS matrix of a SimpleITK affine-like transform (fixed LPS point -> moving LPS point)."""
    a = np.asarray(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    c = np.asarray(transform.GetCenter(), dtype=np.float64)
    t = np.asarray(transform.GetTranslation(), dtype=np.float64)
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = a, c + t - a @ c
    return _LPS @ m @ _LPS


def registration_quality(template: np.ndarray, template_affine: np.ndarray, array: np.ndarray, affine: np.ndarray,
             world: np.ndarray) -> tuple[float, float]:
    """(NCC over the covered template brain voxels, covered fraction of the template brain)."""
    brain = template > 0.1 * float(template.max())
    moved = resample(array[None].astype(np.float32), affine, template.shape, template_affine, world, order=1)[0]
    inside = resample(np.ones((1, *array.shape), np.float32), affine, template.shape, template_affine, world,
                      order=0)[0] > 0.5
    covered = brain & inside
    coverage = float(covered.sum()) / max(1, int(brain.sum()))
    if covered.sum() < 100:
        return 0.0, coverage
    a, b = template[covered].astype(np.float64), moved[covered].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return (float((a * b).sum()) / denom if denom > 0 else 0.0), coverage


def load_template(path: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    if not os.path.isfile(path):
        raise DataError(path, "registration template not found (it ships in the bundle's resources/ folder)")
    img = nib.load(path)
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def register_to_template(
    array: np.ndarray,
    affine: np.ndarray,
    template: str | None = None,
    name: str | None = None,
    min_similarity: float = 0.4,
    min_coverage: float = 0.6,
    threads: int | None = None,
) -> Registration:
    """Affine registration of a 3D head scan to the MNI152 template (method in the module docstring).

    Args:
        array: voxel data ``(x, y, z)``.
        affine: its 4x4 RAS voxel-to-world matrix.
        template: template NIfTI (default :data:`MNI152_TEMPLATE`).
        name: file named in errors.
        min_similarity: smallest accepted NCC between the template and the registered scan.
        min_coverage: smallest accepted fraction of the template brain inside the scan's field of view.
        threads: SimpleITK threads (default: SimpleITK's own choice).

    Returns:
        the :class:`Registration` (``world`` maps template points to scan points).

    Raises:
        DataError: naming ``name`` when the registration fails or its quality is below the thresholds.
    """
    import SimpleITK as sitk

    t0 = time.time()
    template = template or MNI152_TEMPLATE
    tpl, tpl_affine = load_template(template)
    data = np.asarray(array, dtype=np.float32)
    if data.ndim != 3:
        raise DataError(name, f"registration needs a 3D volume, got shape {tuple(data.shape)}")
    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    fixed = _to_sitk(tpl, tpl_affine)
    moving = _downsample(_to_sitk(data, affine), REGISTRATION_SETTINGS["moving_min_spacing_mm"])
    try:
        rigid = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                  sitk.CenteredTransformInitializerFilter.MOMENTS)
        mask = sitk.BinaryDilate(sitk.Cast(fixed > REGISTRATION_SETTINGS["brain_threshold"], sitk.sitkUInt8),
                                 [REGISTRATION_SETTINGS["mask_dilation_voxels"]] * 3)
        _run_stage(fixed, moving, rigid, REGISTRATION_SETTINGS["rigid"], mask)
        full = sitk.AffineTransform(3)
        full.SetCenter(rigid.GetCenter())
        full.SetMatrix(rigid.GetMatrix())
        full.SetTranslation(rigid.GetTranslation())
        mi = _run_stage(fixed, moving, full, REGISTRATION_SETTINGS["affine"], mask)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        raise DataError(name, f"registration to the MNI152 template failed ({lines[-1][:200] if lines else err}); "
                              "is this a T1-weighted head scan?") from err
    world = _matrix_ras(full)
    if not np.isfinite(world).all() or abs(np.linalg.det(world[:3, :3])) < 1e-3:
        raise DataError(name, "registration to the MNI152 template failed (degenerate transform)")
    similarity, coverage = registration_quality(tpl, tpl_affine, data, np.asarray(affine, dtype=np.float64), world)
    result = Registration(world, similarity, coverage, time.time() - t0, mi)
    scale = np.abs(np.linalg.det(world[:3, :3])) ** (1 / 3)
    logger.info("%s: registered to MNI152 in %.1f s (NCC %.3f, coverage %.2f, scale %.3f)", name, result.seconds,
                similarity, coverage, scale)
    if coverage < min_coverage:
        raise DataError(name, f"registration to the MNI152 template refused: the scan covers {coverage:.0%} of the "
                              f"template brain (at least {min_coverage:.0%} needed; a partial-brain slab cannot be "
                              "placed reliably)")
    if similarity < min_similarity:
        raise DataError(name, f"registration to the MNI152 template failed its quality check: NCC {similarity:.3f} "
                              f"< {min_similarity} (not a T1-weighted head scan, or too different from the template)")
    if not 0.6 < scale < 1.6:
        raise DataError(name, f"registration to the MNI152 template refused: implausible head scale {scale:.2f} "
                              "(expected about 1; wrong voxel size in the header?)")
    return result
