"""Shared fixtures: tiny synthetic data sets written as real NIfTI files."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest


def write_tiny_atlas(root: str, n: int = 6, shape: tuple[int, int, int] = (48, 48, 10), seed: int = 0) -> str:
    """``n`` tiny subjects in the ATLAS R1.1 layout (one with two mask files) plus an 80/20 datalist.json.

    Image: noisy bright 'brain' block with a darker lesion box; 1 x 1 x 2 mm voxels, non-trivial origin.
    """
    rng = np.random.default_rng(seed)
    train, val = [], []
    for i in range(n):
        sid = f"{100000 + i:06d}"
        folder = os.path.join(root, "Site1", sid, "t01")
        os.makedirs(folder, exist_ok=True)
        img = rng.normal(0.6, 0.05, shape).astype(np.float32)
        lab = np.zeros(shape, np.uint8)
        cx, cy = rng.integers(14, shape[0] - 14, 2)
        lab[cx - 5 : cx + 5, cy - 5 : cy + 5, 3:7] = 1
        img[lab > 0] -= 0.35
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        affine[:3, 3] = [-24.0, -30.0, 5.0]
        nib.save(nib.Nifti1Image(img, affine), os.path.join(folder, f"{sid}_t1w_deface_stx.nii.gz"))
        masks = [lab]
        if i == 1:  # a subject whose lesion is split over two files, as some ATLAS R1.1 subjects are
            second = np.zeros_like(lab)
            second[cx - 5 : cx + 5, cy - 5 : cy, 3:7] = 1
            first = lab.copy()
            first[second > 0] = 0
            masks = [first, second]
        names = []
        for k, m in enumerate(masks):
            name = f"{sid}_LesionSmooth_stx.nii.gz" if k == 0 else f"{sid}_LesionSmooth_{k}_stx.nii.gz"
            nib.save(nib.Nifti1Image(m, affine), os.path.join(folder, name))
            names.append(os.path.relpath(os.path.join(folder, name), root))
        item = {"image": os.path.relpath(os.path.join(folder, f"{sid}_t1w_deface_stx.nii.gz"), root), "label": names,
                "subject": f"Site1/{sid}"}
        (val if i >= n - max(1, n // 5) else train).append(item)
    with open(os.path.join(root, "datalist.json"), "w") as f:
        json.dump({"training": train, "validation": val}, f, indent=1)
    return root


@pytest.fixture(scope="session")
def tiny_atlas(tmp_path_factory) -> str:
    return write_tiny_atlas(str(tmp_path_factory.mktemp("tiny_atlas")))
