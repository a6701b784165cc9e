"""Training learns: each stroke bundle, trained briefly on a small synthetic set, segments held-out lesions.

The data are :func:`lesionlab.data.synthetic.synth_volume_pair` volumes (48 x 48 x 24, two chronic-infarct-like lesions
each: hypointense but brighter than the ventricles, mottled, with a gliotic rim, never touching CSF), written as
NIfTI; 6 subjects train, 2 are held out. Every bundle runs its own ``train.json`` through MONAI's runner with narrow
networks, the thesis's protocol for the 2.5D bundles (``sampling="all"``: every slice once per epoch, batch 16),
and the held-out validation Dice of the last epoch (the bundle's ``val_mean_dice``, 3D per volume) must reach a floor.

Floors were set well below what was measured (seeds 0 and 1, one thread, see ``MEASURED``); an untrained network
scores about 0.0-0.05 here (it predicts nothing or floods the volume), so a floor of 0.3 or more means the
network learned the lesions. Marked slow; about half a CPU minute per bundle on an idle 2-core machine (all
four together took several minutes on the shared, heavily loaded development machine).
"""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from lesionlab.apps.bundle import copy_bundle, run_bundle
from lesionlab.data.synthetic import synth_volume_pair

pytestmark = pytest.mark.slow

SHAPE = (48, 48, 24)
N_TRAIN, N_HELD_OUT = 6, 2

_2D_48 = {"roi_start": [0, 0], "roi_end": [48, 48], "spatial_size": [48, 48]}
_2D_96 = {"roi_start": [0, 0], "roi_end": [48, 48], "spatial_size": [96, 96]}
_25D = {"sampling": "all", "batch_size": 16}

#: bundle -> (config overrides, epochs, Dice floor)
CASES = {
    "brain_mri_dunet_stroke_segmentation": ({**_2D_48, **_25D, "network_def#features": [8, 16, 16, 32, 32]}, 8, 0.3),
    "brain_mri_agmrnet_stroke_segmentation": ({**_2D_96, **_25D, "network_def#features": [4, 16, 16, 16, 16]}, 8,
                                              0.2),
    # 16 epochs: after 8 TSRL-Net had reached only 0.12 (seed 0); its deep supervision and CRL gates need longer
    "brain_mri_tsrlnet_stroke_segmentation": ({**_2D_96, **_25D, "network_def#features": [4, 16, 16, 16, 16]}, 16,
                                              0.3),
    "brain_mri_unet3d_stroke_segmentation": ({"patch_size": [32, 32, 16], "patches_per_volume": 4,
                                              "network_def#channels": [8, 16, 16, 32, 32]}, 25, 0.1),
}

#: held-out validation Dice measured with ``train_and_score`` (data and training seed: Dice; one thread, on the shared
#: development machine under a load of about 20 on 2 cores, so the seconds in the module docstring are inflated)
MEASURED: dict[str, dict[int, float]] = {
    "brain_mri_dunet_stroke_segmentation": {0: 0.6885, 1: 0.5931},
    "brain_mri_unet3d_stroke_segmentation": {0: 0.5063, 1: 0.2201},
    "brain_mri_agmrnet_stroke_segmentation": {0: 0.4689, 1: 0.8188},
    "brain_mri_tsrlnet_stroke_segmentation": {0: 0.7896, 1: 0.8092},  # 16 epochs (0.1199 after 8, seed 0)
}

#: the same, seed 0, two threads on an idle 2-core machine (fresh clone of a254850, 2026-12-02): the Dice moves with
#: the thread count (float reduction order) and stays above every floor; seconds per bundle in brackets
MEASURED_TWO_THREADS_SEED_0: dict[str, float] = {
    "brain_mri_dunet_stroke_segmentation": 0.5690,  # 11 s
    "brain_mri_unet3d_stroke_segmentation": 0.5101,  # 8 s
    "brain_mri_agmrnet_stroke_segmentation": 0.5857,  # 45 s
    "brain_mri_tsrlnet_stroke_segmentation": 0.8112,  # 82 s
}


def write_learning_set(root: str, seed: int = 0) -> str:
    """``N_TRAIN + N_HELD_OUT`` synthetic subjects as NIfTI (1 mm voxels) and a ``datalist.json``; returns ``root``."""
    items = []
    for i in range(N_TRAIN + N_HELD_OUT):
        image, mask = synth_volume_pair(SHAPE, seed=1000 * seed + i, n_lesions=2)
        folder = os.path.join(root, f"sub{i:02d}")
        os.makedirs(folder, exist_ok=True)
        paths = {}
        for key, arr, dtype in (("image", image * 1000.0, np.int16), ("label", mask, np.uint8)):
            paths[key] = os.path.join(folder, f"sub{i:02d}_{key}.nii.gz")
            nib.save(nib.Nifti1Image(np.rint(arr).astype(dtype), np.eye(4)), paths[key])
        items.append({"image": paths["image"], "label": [paths["label"]], "subject": f"sub{i:02d}"})
    with open(os.path.join(root, "datalist.json"), "w") as f:
        json.dump({"training": items[:N_TRAIN], "validation": items[N_TRAIN:]}, f, indent=1)
    return root


def train_and_score(bundle: str, data: str, workdir: str, seed: int = 0) -> float:
    """Train ``bundle`` with its ``CASES`` settings; return the held-out validation Dice of the last epoch."""
    overrides, epochs, _ = CASES[bundle]
    root = copy_bundle(bundle, os.path.join(workdir, bundle))
    run_bundle(root, "train", dataset_dir=data, epochs=epochs, val_interval=epochs, seed=seed, progress=False,
               **overrides)
    with open(os.path.join(root, "eval", "history.json")) as f:
        history = json.load(f)["epochs"]
    return float(history[-1]["val_mean_dice"])


@pytest.fixture(scope="module")
def learning_set(tmp_path_factory) -> str:
    return write_learning_set(str(tmp_path_factory.mktemp("learning_set")))


@pytest.mark.parametrize("bundle", sorted(CASES))
def test_training_learns(bundle, learning_set, tmp_path):
    floor = CASES[bundle][2]
    dice = train_and_score(bundle, learning_set, str(tmp_path), seed=0)
    assert dice >= floor, f"{bundle}: held-out validation Dice {dice:.3f} after training, floor {floor}"


@pytest.mark.parametrize("bundle", sorted(CASES))
def test_floor_sits_below_every_measured_dice(bundle):
    # a floor above a measured run would make the learns test flaky on some machine or thread count
    measured = [*MEASURED[bundle].values(), MEASURED_TWO_THREADS_SEED_0[bundle]]
    assert CASES[bundle][2] < 0.8 * min(measured), (bundle, CASES[bundle][2], measured)
