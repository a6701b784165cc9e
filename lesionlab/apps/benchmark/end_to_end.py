"""End-to-end paths: 2.5D volume inference, 3D sliding window, data loading and the whole-slide phases."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from lesionlab.apps.benchmark.measure import _autocast, _dev, _sync
from lesionlab.networks.utils import to_memory_format

#: depth of the stroke volumes (MNI152 1 mm grid, 189 axial slices, as the ATLAS data the stroke bundles train on)
STROKE_DEPTH = 189


# ----------------------------------------------------------------------------------------------------- end to end
def _timed_network(model: nn.Module, acc: dict[str, float]) -> Callable[[torch.Tensor], torch.Tensor]:
    def call(x: torch.Tensor) -> torch.Tensor:
        _sync()
        t0 = time.perf_counter()
        y = model(x)
        _sync()
        acc["network_s"] += time.perf_counter() - t0
        return y

    return call


def slice25d_volume(model: nn.Module, size: int, depth: int, sw_batch_size: int = 16, grad_mode: str = "no_grad",
                    channels_last: bool = False) -> dict[str, Any]:
    """2.5D inference of one (1, 1, size, size, depth) volume through the bundles' ``Slice25DInferer``."""
    from lesionlab.pipelines.inferers import Slice25DInferer

    model = to_memory_format(model.eval().to(_dev()), channels_last)
    inferer = Slice25DInferer(sw_batch_size=sw_batch_size, activation="sigmoid")
    vol = torch.rand(1, 1, size, size, depth, generator=torch.Generator().manual_seed(0)).to(_dev())
    acc = {"network_s": 0.0}
    ctx = torch.inference_mode() if grad_mode == "inference" else torch.no_grad()
    with ctx, _autocast():
        inferer(vol[..., : min(depth, sw_batch_size)], model)  # warm-up: one network call of the timed size
        t0 = time.perf_counter()
        inferer(vol, _timed_network(model, acc))
        _sync()
        total = time.perf_counter() - t0
    return {"slices": depth, "sw_batch_size": sw_batch_size, "grad_mode": grad_mode, "channels_last": channels_last,
            "seconds": total, "network_s": acc["network_s"], "outside_share": 1.0 - acc["network_s"] / total}


def sliding_window_3d(model: nn.Module, shape: Sequence[int], roi: Sequence[int], sw_batch_size: int = 2,
                      overlap: float = 0.25) -> dict[str, Any]:
    """3D sliding-window inference (MONAI ``SlidingWindowInferer``, Gaussian blending) of one volume."""
    from monai.inferers import SlidingWindowInferer

    model = model.eval().to(_dev())
    inferer = SlidingWindowInferer(roi_size=tuple(roi), sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian")
    vol = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(0)).to(_dev())
    acc = {"network_s": 0.0}
    with torch.inference_mode(), _autocast():
        model(torch.rand(sw_batch_size, 1, *roi, device=_dev()))  # warm-up
        t0 = time.perf_counter()
        inferer(vol, _timed_network(model, acc))
        _sync()
        total = time.perf_counter() - t0
    return {"volume": list(shape), "roi": list(roi), "overlap": overlap, "sw_batch_size": sw_batch_size,
            "seconds": total, "network_s": acc["network_s"], "outside_share": 1.0 - acc["network_s"] / total}


def data_loader(workdir: str, n: int, shape: Sequence[int], crop: Sequence[int], epochs: int = 2) -> dict[str, Any]:
    """Samples/s of MONAI ``Dataset`` vs ``CacheDataset`` vs ``PersistentDataset`` on NIfTI image/label pairs.

    Deterministic part (cached): load, channel first, RAS orientation, 1.5 mm resampling, z-score of the brain;
    random part (every epoch): a random crop and flip. Single-process loading (``num_workers=0``)."""
    import nibabel as nib
    import numpy as np
    from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        RandFlipd,
        RandSpatialCropd,
        Spacingd,
    )

    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img = rng.normal(100, 20, size=tuple(shape)).astype(np.float32)
        lab = (rng.random(tuple(shape)) > 0.99).astype(np.uint8)
        for key, arr in (("image", img), ("label", lab)):
            nib.save(nib.Nifti1Image(arr, np.eye(4)), os.path.join(workdir, f"{key}{i:03d}.nii.gz"))
        items.append({k: os.path.join(workdir, f"{k}{i:03d}.nii.gz") for k in ("image", "label")})
    keys = ["image", "label"]
    transform = Compose([
        LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys), Orientationd(keys, axcodes="RAS", labels=None),
        Spacingd(keys, pixdim=(1.5, 1.5, 1.5), mode=("bilinear", "nearest")),
        NormalizeIntensityd("image", nonzero=True),
        RandSpatialCropd(keys, roi_size=tuple(crop), random_size=False), RandFlipd(keys, prob=0.5, spatial_axis=0),
    ])
    res: dict[str, Any] = {"volumes": n, "shape": list(shape), "crop": list(crop), "epochs": epochs}
    builders: dict[str, Callable[[], Any]] = {
        "Dataset": lambda: Dataset(items, transform),
        "CacheDataset": lambda: CacheDataset(items, transform, cache_rate=1.0, num_workers=0, progress=False),
        "PersistentDataset": lambda: PersistentDataset(items, transform, cache_dir=os.path.join(workdir, "cache")),
    }
    for name, make in builders.items():
        t0 = time.perf_counter()
        ds = make()
        build_s = time.perf_counter() - t0
        per_epoch = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            for _batch in DataLoader(ds, batch_size=1, num_workers=0):
                pass
            per_epoch.append(time.perf_counter() - t0)
        res[name] = {"build_s": build_s, "epoch_s": per_epoch,
                     "first_epoch_samples_per_s": n / (build_s + per_epoch[0]),
                     "steady_samples_per_s": n / per_epoch[-1]}
    return res


def wsi(bench_wsi: Path, height: int, width: int, timeout: float = 900) -> dict[str, Any]:
    """Whole-slide tiles/s and patches/s: ``bench/bench_wsi.py``'s generate, tile and segment phases."""
    if not bench_wsi.is_file():
        return {"error": f"{bench_wsi} not found (the benchmark scripts are in the source tree, not the wheel)"}
    workdir = tempfile.mkdtemp(prefix="lesionlab_bench_wsi_")
    res: dict[str, Any] = {"height": height, "width": width, "network": "small"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(bench_wsi.parent.parent)] + sys.path)}
    try:
        for phase in ("generate", "tile", "segment"):
            cmd = [sys.executable, str(bench_wsi), "--phase", phase, "--workdir", workdir, "--height", str(height),
                   "--width", str(width), "--network", "small"]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 env=env, timeout=timeout).stdout
            res[phase] = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
    except (subprocess.SubprocessError, StopIteration, json.JSONDecodeError, OSError) as err:
        res["error"] = f"{type(err).__name__}: {err}"[:300]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return res
