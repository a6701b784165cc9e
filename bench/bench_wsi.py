"""Whole-slide benchmark: peak memory and throughput of generating, tiling and segmenting a large synthetic slide.

Each phase runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its own:

1. ``generate``: write a synthetic PAS-like pyramidal TIFF (default 30,000 x 40,000 RGB, JPEG tiles when
   imagecodecs is installed, else zlib) with its RLE mask (``lesionlab.data.synthetic.synth_hubmap``);
2. ``tile``: cut it into 1024 x 1024 image/mask PNG pairs with the blank-tile criterion (``tile_slide``);
3. ``segment``: streaming whole-slide inference (``lesionlab.pipelines.wsi.segment_slide``) writing the OME-TIFF
   mask, RLE and GeoJSON; read time (background reader thread) and network time are reported separately.

The network of the ``segment`` phase is CBAM-PSPNet with random weights; ``--network small`` (default) uses a reduced
width so that the pipeline, not the ResNet-50, is what is measured on a CPU; ``--network full`` is the paper's size.
Timings depend on the machine and its load: state both when quoting them.

Usage::

    python bench/bench_wsi.py                       # 30,000 x 40,000
    python bench/bench_wsi.py --height 8000 --width 10000 --network full
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _phase(args: argparse.Namespace) -> dict:
    import importlib.util

    t0 = time.perf_counter()
    if args.phase == "generate":
        from lesionlab.data.synthetic import synth_hubmap

        comp = "jpeg" if importlib.util.find_spec("imagecodecs") else "zlib"
        synth_hubmap(args.workdir, n_slides=1, shape=(args.height, args.width), seed=0, polygons=False, progress=True,
                     compression=comp)
        return {"phase": "generate", "seconds": time.perf_counter() - t0, "compression": comp,
                "megapixels": args.height * args.width / 1e6}
    slide = os.path.join(args.workdir, "train", "synth00000.tiff")
    if args.phase == "tile":
        from lesionlab.data.hubmap import read_train_csv
        from lesionlab.data.tiles import tile_slide

        rle = read_train_csv(os.path.join(args.workdir, "train.csv"))["synth00000"]
        out = os.path.join(args.workdir, "tiles")
        recs = tile_slide(slide, out, "synth00000", rle=rle, tile=1024)
        dt = time.perf_counter() - t0
        n_grid = -(-args.height // 1024) * -(-args.width // 1024)
        shutil.rmtree(out, ignore_errors=True)
        return {"phase": "tile", "seconds": dt, "grid_tiles": n_grid, "kept_tiles": len(recs),
                "tiles_per_s": n_grid / dt}
    import torch

    from lesionlab.networks.nets import PSPNetCBAM
    from lesionlab.pipelines.wsi import segment_slide

    torch.manual_seed(0)
    kw = {} if args.network == "full" else {"layers": (1, 1, 1, 1), "width": 8, "ppm_channels": 16,
                                            "head_channels": 32, "aux_channels": 0}
    net = PSPNetCBAM(2, 3, 2, **kw).eval()
    s = segment_slide(slide, net, os.path.join(args.workdir, "pred"), batch_size=4, progress=True)
    dt = time.perf_counter() - t0
    return {"phase": "segment", "network": args.network, "seconds": dt, "patches": s["patches"],
            "tissue_patches": s["tissue_patches"], "patches_per_s": s["patches"] / dt,
            "read_s": s["timings"]["read_s"], "network_s": s["timings"]["network_s"], "glomeruli": s["glomeruli"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=30000)
    p.add_argument("--width", type=int, default=40000)
    p.add_argument("--network", choices=("small", "full"), default="small")
    p.add_argument("--workdir", default=None, help="keep files here (default: a temporary folder, removed)")
    p.add_argument("--phase", choices=("generate", "tile", "segment"), default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        result = _phase(args)
        result["peak_rss_mib"] = round(_peak_mib(), 1)
        print("RESULT " + json.dumps(result))
        return
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_wsi_")
    try:
        print(f"slide {args.height} x {args.width} RGB ({args.height * args.width / 1e6:.0f} Mpx), workdir {workdir}")
        for phase in ("generate", "tile", "segment"):
            cmd = [sys.executable, __file__, "--phase", phase, "--workdir", workdir, "--height", str(args.height),
                   "--width", str(args.width), "--network", args.network]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            res = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
            print(f"{phase:9s} " + "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in res.items() if k != "phase"))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
