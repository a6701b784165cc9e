"""Header checks before allocation: values a reader would otherwise invent or allocate."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from lesionlab.data.headers import check_image_header
from lesionlab.errors import DataError


def _nifti(path, shape=(8, 8, 4), zooms=None, affine=None):
    img = nib.Nifti1Image(np.random.default_rng(0).random(shape).astype(np.float32),
                          np.diag([1.0, 1.0, 2.0, 1.0]) if affine is None else affine)
    if zooms is not None:
        img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return str(path)


def test_zero_pixdim_is_refused_although_nibabel_turns_it_into_1mm(tmp_path):
    path = _nifti(tmp_path / "zero.nii.gz", zooms=(0.0, 1.0, 2.0))
    with pytest.raises(DataError, match=r"zero\.nii\.gz: invalid voxel spacing \(0\.0, 1\.0, 2\.0\)"):
        check_image_header(path)


def test_declared_size_is_refused_before_allocation(tmp_path):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1300, 1300, 1300))
    hdr.set_qform(np.eye(4), 1)
    path = tmp_path / "huge.nii.gz"
    with gzip.open(path, "wb") as f:
        f.write(hdr.binaryblock + b"\0" * 1004)
    assert path.stat().st_size < 2000
    with pytest.raises(DataError, match="implausible image header"):
        check_image_header(str(path))


def test_missing_orientation_needs_explicit_spacing(tmp_path):
    img = nib.Nifti1Image(np.ones((8, 8, 4), np.float32), None)
    img.header.set_qform(None, 0)
    img.header.set_sform(None, 0)
    nib.save(img, str(tmp_path / "bare.nii"))
    with pytest.raises(DataError, match="no voxel orientation"):
        check_image_header(str(tmp_path / "bare.nii"))
    info = check_image_header(str(tmp_path / "bare.nii"), spacing=(0.5, 0.5, 3.0))
    assert not info.has_geometry and "given by the user" in info.assumptions[0]


def test_truncated_uncompressed_file(tmp_path):
    path = _nifti(tmp_path / "t.nii")
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-40])
    with pytest.raises(DataError, match=r"t\.nii: truncated image file: \d+ bytes"):
        check_image_header(path)
