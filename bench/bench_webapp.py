"""Web app: time from upload to result for a 1024x1024 tile and a 189-slice volume, on the CPU.

Times :func:`lesionlab.apps.webapp.page_single.analyse`, the function the page runs when "Start analysis" is pressed:
the upload is written to the server's temporary folder, decoded and checked, run through the bundle's own inference
workflow, brought back to the input grid and prepared for display; the folder is removed. The first call includes
building the workflow (network, weights, transforms); later calls reuse it (the page caches the model per process),
so the "warm" figure is what a user waits for after the first request.

* Tile: a 1024x1024 RGB PNG through a 2D tile bundle with a MONAI UNet of realistic width (16-256 channels, 2
  residual units, 2.0 M parameters; seeded random weights: the time does not depend on the weights) and a 256x256
  sliding window (25 % overlap), built by ``tests/apps/webapp/toy_bundles.py``.
* Volume: a 197x233x189 synthetic ATLAS T1 volume (the MNI152 1 mm grid, as ATLAS R1.1) as .nii.gz through the
  D-UNet stroke bundle (2.5D, every one of the 189 slices; the paper's full width unless ``--dunet-features``), with
  the trained demo bundle when ``--bundle`` names one, else seeded random weights.

Run: ``.venv/bin/python bench/bench_webapp.py [--repeats 3] [--bundle demo_output/brain_mri_dunet_stroke_segmentation]``
Figures depend on the machine and its load; they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _time(model, name: str, data: bytes, repeats: int) -> list[float]:
    from lesionlab.apps.webapp.page_single import analyse

    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        analyse(model, name, data, max_mb=1024)
        out.append(time.perf_counter() - t0)
    return out


def _volume_bytes(tmp: str) -> tuple[bytes, tuple[int, ...]]:
    import glob

    import nibabel as nib

    from lesionlab.data.synthetic import synth_atlas

    synth_atlas(os.path.join(tmp, "atlas"), n=1, seed=0, progress=False)
    path = sorted(glob.glob(os.path.join(tmp, "atlas", "**", "*_t1w_deface_stx.nii.gz"), recursive=True))[0]
    with open(path, "rb") as f:
        return f.read(), nib.load(path).shape


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per input (the first one is cold)")
    ap.add_argument("--bundle", help="trained D-UNet bundle folder or archive (default: random weights)")
    ap.add_argument("--dunet-features", type=int, nargs=5, help="network_def#features of the random-weight D-UNet")
    ap.add_argument("--only", choices=["tile", "volume"], help="time one input only")
    args = ap.parse_args()

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
          "(shared machine: figures include other jobs' load)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "volume":
            _tile(tmp, args.repeats)
        if args.only != "tile":
            _volume(tmp, args)


def _tile(tmp: str, repeats: int) -> None:
    from lesionlab.apps.webapp.model import BundleModel
    from tests.apps.webapp.toy_bundles import disk_image, make_tile_bundle, png

    tile_bundle = make_tile_bundle(os.path.join(tmp, "tile"), network="unet")
    model = BundleModel(tile_bundle)
    n_params = sum(p.numel() for p in model.network.parameters())
    img, _ = disk_image(1024, 1024, seed=0, n=12)
    t = _time(model, "tile.png", png(img), repeats)
    print(f"1024x1024 RGB tile, 2D UNet ({n_params / 1e6:.1f} M parameters), sliding window 256: "
          f"first {t[0]:.2f} s, then " + ", ".join(f"{x:.2f}" for x in t[1:]) + " s")


def _volume(tmp: str, args) -> None:
    import torch

    from lesionlab.apps.bundle import copy_bundle, set_config_values
    from lesionlab.apps.deploy.config import build_network
    from lesionlab.apps.webapp.model import BundleModel

    if args.bundle:
        root, label = args.bundle, f"trained bundle {args.bundle}"
    else:
        root = copy_bundle("brain_mri_dunet_stroke_segmentation", os.path.join(tmp, "dunet"))
        if args.dunet_features:
            set_config_values(root, {"network_def#features": list(args.dunet_features)}, configs=("inference",))
        torch.manual_seed(0)
        os.makedirs(os.path.join(root, "models"))
        torch.save(build_network(root).state_dict(), os.path.join(root, "models", "model.pt"))
        label = "random weights"
    model = BundleModel(root)
    n_params = sum(p.numel() for p in model.network.parameters())
    data, shape = _volume_bytes(tmp)
    t = _time(model, "t1w.nii.gz", data, args.repeats)
    print(f"{'x'.join(map(str, shape))} volume ({shape[2]} slices, {len(data) / 1e6:.1f} MB .nii.gz), D-UNet 2.5D "
          f"({n_params / 1e6:.1f} M parameters, {label}): first {t[0]:.2f} s, then "
          + ", ".join(f"{x:.2f}" for x in t[1:]) + " s")


if __name__ == "__main__":
    main()
