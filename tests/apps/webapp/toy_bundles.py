"""Tiny but real MONAI bundles for the web-app tests: configs, metadata and ``models/model.pt``.

* :func:`make_tile_bundle`: 2D RGB tile segmentation (``segmentation-2d``), 2 classes. The network is a 1x1
  convolution whose weights are written by hand: class 1 wins where ``10 (r - g) - 3 > 0`` (r, g in [0, 1]),
  i.e. on PAS-purple pixels and not on the pale background, so the expected mask of a synthetic image is known
  exactly. ``network="unet"`` builds a MONAI 2D UNet of realistic width (16-256 channels, seeded random weights)
  with a 256x256 sliding window instead, for timing.
* :func:`make_crop_classifier`: RGB crop -> 4 classes (``classification``) with MONAI's ``Classifier`` (seeded random
  weights), resized to 64x64 by its own preprocessing.
* :func:`make_volume_bundle`: a copy of the project's 3D U-Net stroke bundle with a narrow network and seeded random
  weights (``segmentation-3d``).
* :func:`disk_image`: a synthetic RGB tile with purple disks ("glomeruli") on a pale pink background, and its
  true mask.

Everything runs through the same code path as a trained project bundle (MONAI ``ConfigWorkflow`` of
``configs/inference.json``).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
TILE_CLASSES = {"0": "background", "1": "glomerulus"}
CROP_CLASSES = {"0": "normal", "1": "global sclerosis", "2": "segmental sclerosis", "3": "crescent"}


def _metadata(name: str, task: str, inp: dict, out: dict, data_type: str = "pil") -> dict:
    return {
        "schema": SCHEMA, "version": "0.0.1", "changelog": {"0.0.1": "test bundle of the web app"},
        "monai_version": "1.6.1", "pytorch_version": "2.13.0", "numpy_version": "2.4.6",
        "required_packages_version": {}, "supported_apps": {}, "name": name, "task": task,
        "description": "test bundle (hand-set or seeded random weights); not a trained model",
        "authors": "lesionlab developers", "copyright": "Copyright (c) lesionlab developers",
        "data_source": "synthetic", "data_type": data_type, "image_classes": "RGB", "label_classes": "see channel_def",
        "pred_classes": "see channel_def", "eval_metrics": {}, "intended_use": "Testing only", "references": [],
        "network_data_format": {"inputs": {"image": inp}, "outputs": {"pred": out}},
    }


def _inference(network_def: dict, pre: list, inferer: dict, post: list) -> dict:
    return {
        "imports": ["$import numpy"],
        "bundle_root": ".", "output_dir": "$@bundle_root + '/eval'", "load_pretrain": True, "device": "cpu",
        "network_def": network_def, "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": pre},
        "dataset": {"_target_": "Dataset", "data": [], "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "num_workers": 0},
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing"},
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                             "load_dict": {"model": "@network"}, "map_location": "@device"},
        "initialize": ["$@checkpointloader(@evaluator) if @load_pretrain else None"],
        "run": ["$@evaluator.run()"],
    }


def _write(root: str, metadata: dict, inference: dict, net: torch.nn.Module | None = None) -> str:
    os.makedirs(os.path.join(root, "configs"), exist_ok=True)
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    for name, cfg in (("metadata", metadata), ("inference", inference)):
        with open(os.path.join(root, "configs", f"{name}.json"), "w") as f:
            json.dump(cfg, f, indent=2)
    if net is None:
        from monai.bundle import ConfigParser

        parser = ConfigParser(inference)
        net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), os.path.join(root, "models", "model.pt"))
    return root


_LOAD_RGB = [
    {"_target_": "LoadImaged", "keys": "image", "image_only": True},
    {"_target_": "EnsureChannelFirstd", "keys": "image"},
    {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": 0, "a_max": 255, "b_min": 0.0, "b_max": 1.0},
    {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
]


def make_tile_bundle(root: str, network: str = "conv1x1", trained: bool = True, whole_slide: bool = False) -> str:
    """A 2D RGB tile segmentation bundle at ``root`` (see the module docstring); ``trained=False`` leaves out
    ``models/model.pt``; ``whole_slide`` declares whole-slide inference (``configs/inference_wsi.json``, here the
    same workflow)."""
    if network == "conv1x1":
        net_def = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 2, "kernel_size": 1}
        inferer = {"_target_": "SimpleInferer"}
        net = torch.nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            net.weight.zero_()
            net.bias.zero_()
            net.weight[1, :, 0, 0] = torch.tensor([10.0, -10.0, 0.0])
            net.bias[1] = -3.0
    else:
        net_def = {"_target_": "UNet", "spatial_dims": 2, "in_channels": 3, "out_channels": 2,
                   "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2}
        inferer = {"_target_": "SlidingWindowInferer", "roi_size": [256, 256], "sw_batch_size": 4, "overlap": 0.25}
        torch.manual_seed(0)
        net = None
    post = [
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
    ]
    inp = {"type": "image", "format": "RGB", "modality": "light microscopy (PAS)", "num_channels": 3,
           "spatial_shape": ["*", "*"], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
           "channel_def": {"0": "R", "1": "G", "2": "B"}}
    out = {"type": "image", "format": "segmentation", "num_channels": 2, "spatial_shape": ["*", "*"],
           "dtype": "float32", "value_range": [0, 1], "is_patch_data": False, "channel_def": TILE_CLASSES}
    meta = _metadata("Toy glomerulus tile segmentation", "Segmentation of glomeruli in PAS-stained kidney tiles",
                     inp, out)
    if whole_slide:
        inp["whole_slide"] = True
    _write(root, meta, _inference(net_def, _LOAD_RGB, inferer, post), net)
    if whole_slide:
        import shutil

        configs = os.path.join(root, "configs")
        shutil.copy(os.path.join(configs, "inference.json"), os.path.join(configs, "inference_wsi.json"))
    if not trained:
        os.remove(os.path.join(root, "models", "model.pt"))
    return root


def make_crop_classifier(root: str) -> str:
    """A 4-class RGB crop classifier bundle at ``root`` (MONAI ``Classifier``, seeded random weights)."""
    net_def = {"_target_": "Classifier", "in_shape": [3, 64, 64], "classes": 4, "channels": [8, 16],
               "strides": [2, 2]}
    pre = _LOAD_RGB + [{"_target_": "Resized", "keys": "image", "spatial_size": [64, 64]}]
    post = [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]
    inp = {"type": "image", "format": "RGB", "modality": "light microscopy (PAS)", "num_channels": 3,
           "spatial_shape": [64, 64], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
           "channel_def": {"0": "R", "1": "G", "2": "B"}}
    out = {"type": "probabilities", "format": "classification", "num_channels": 4, "spatial_shape": [],
           "dtype": "float32", "value_range": [0, 1], "is_patch_data": False, "channel_def": CROP_CLASSES}
    meta = _metadata("Toy glomerular lesion classifier", "Classification of glomerulus crops into 4 lesion classes",
                     inp, out)
    torch.manual_seed(0)
    return _write(root, meta, _inference(net_def, pre, {"_target_": "SimpleInferer"}, post))


def make_volume_bundle(root: str) -> str:
    """The project's 3D U-Net stroke bundle with a narrow network and seeded random weights, at ``root``."""
    from lesionlab.apps.bundle import copy_bundle, set_config_values
    from lesionlab.apps.deploy.config import build_network

    copy_bundle("brain_mri_unet3d_stroke_segmentation", root)
    # space "mni": the toy volumes are noise, not heads, so they are taken as already registered (resampled onto
    # the model grid without registration); registration itself is tested in tests/transforms/test_registration.py
    set_config_values(root, {"network_def#channels": [4, 8, 8, 8, 8], "patch_size": [32, 32, 32], "space": "mni"},
                      configs=("inference",))
    torch.manual_seed(0)
    net = build_network(root)
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    torch.save(net.state_dict(), os.path.join(root, "models", "model.pt"))
    return root


def disk_image(h: int = 96, w: int = 128, seed: int = 0, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 pale tile with ``n`` purple disks (radius 6-14 px) and their mask (1 inside a disk)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.clip(rng.normal((215, 190, 205), 6, (h, w, 3)), 0, 255)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(n):
        r = rng.integers(6, 15)
        cy, cx = rng.integers(r, h - r), rng.integers(r, w - r)
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
    img[mask > 0] = np.clip(rng.normal((150, 40, 160), 6, (int(mask.sum()), 3)), 0, 255)
    return img.astype(np.uint8), mask


def png(a: np.ndarray) -> bytes:
    """PNG bytes of an array."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()
