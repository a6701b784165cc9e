"""Whole-slide benchmark: peak memory and throughput of generating, tiling and segmenting a large synthetic slide.

Each phase runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its own:

1. ``generate``: write a synthetic PAS-like pyramidal TIFF (default 30,000 x 40,000 RGB, JPEG tiles when
   imagecodecs is installed, else zlib) with its RLE mask (``lesionlab.data.synthetic.synth_hubmap``); skipped when
   ``--workdir`` already holds the slide;
2. ``tile``: cut it into 1024 x 1024 image/mask PNG pairs with the blank-tile criterion (``tile_slide``);
   ``--tile-rows N`` bounds the run to N rows of tiles through the (tissue-rich) middle of the slide;
3. ``segment``: streaming whole-slide inference over the **whole slide** (``lesionlab.pipelines.wsi.segment_slide``)
   writing the OME-TIFF mask, RLE and GeoJSON. ``--network small`` (default) is CBAM-PSPNet at a reduced width, so
   that the pipeline (reading, blending, outputs, memory), not the ResNet-50, is what this phase measures on a CPU;
   ``--network full`` is the paper's size (hours for a whole slide on a CPU); ``--network demo --weights
   <demo>/kidney_pas_pspnet_cbam_glomeruli_segmentation/models/model.pt --patch 512 --network-size 128`` runs the
   demo's trained reduced network, whose masks (and so the GeoJSON/RLE sizes) are realistic, unlike a random
   network's;
4. ``network``: the paper's full CBAM-PSPNet (51.3 M parameters, random weights) on the first ``--full-patches``
   tissue patches of the slide (1024 read -> 256, batch 4): seconds per patch and peak memory of the full network.
   The full-network whole-slide time is **extrapolated** as ``tissue patches x seconds per patch`` (reading runs in a
   background thread and overlaps with the network).

Reported per phase: wall time, CPU time (all threads), tiles or patches per second, peak RSS; for ``segment``:
reader-thread time vs network time and the time the network sat idle waiting for the reader (``wait_s``: reading is
the bottleneck when it is a large share of the loop). Figures depend on the machine and its load: the printout and
the JSON record the load average, CPU count and thread count; quote them with the figures (on a shared machine the
CPU times are the steadier figures).

Usage::

    OMP_NUM_THREADS=2 python bench/bench_wsi.py --workdir /tmp/bench_wsi --json bench_wsi.json
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

PHASES = ("generate", "tile", "segment", "network")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _slide(workdir: str) -> str:
    return os.path.join(workdir, "train", "synth00000.tiff")


def _network(kind: str, weights: str | None = None):
    import torch

    from lesionlab.networks.nets import PSPNetCBAM

    torch.manual_seed(0)
    if kind == "demo":  # the demo's reduced network; with --weights, its trained state dict (realistic masks)
        from lesionlab.apps.glomeruli import DEMO_NETWORK

        kw = dict(DEMO_NETWORK)
    else:
        kw = {} if kind == "full" else {"layers": (1, 1, 1, 1), "width": 8, "ppm_channels": 16, "head_channels": 32,
                                        "aux_channels": 0}
    net = PSPNetCBAM(2, 3, 2, **kw)
    if weights:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state) if "model" in state else state)
    return net.eval()


def _phase(args: argparse.Namespace) -> dict:
    import importlib.util

    t0 = time.perf_counter()
    if args.phase == "generate":
        from lesionlab.data.synthetic import synth_hubmap

        comp = "jpeg" if importlib.util.find_spec("imagecodecs") else "zlib"
        synth_hubmap(args.workdir, n_slides=1, shape=(args.height, args.width), seed=0, polygons=False, progress=True,
                     compression=comp)
        return {"seconds": time.perf_counter() - t0, "compression": comp,
                "megapixels": args.height * args.width / 1e6, "file_mb": os.path.getsize(_slide(args.workdir)) / 1e6}
    slide = _slide(args.workdir)
    if args.phase == "tile":
        import lesionlab.data.tiles as tiles_module
        from lesionlab.data.hubmap import read_train_csv
        from lesionlab.data.tiles import tile_slide

        rle = read_train_csv(os.path.join(args.workdir, "train.csv"))["synth00000"]
        out = os.path.join(args.workdir, "tiles")
        n_rows = -(-args.height // 1024)
        rows = range(n_rows)
        if 0 < args.tile_rows < n_rows:  # a band of tile rows through the middle (tissue-rich: the slow case)
            first = (n_rows - args.tile_rows) // 2
            rows = range(first, first + args.tile_rows)
            every = tiles_module.iter_windows
            tiles_module.iter_windows = lambda shape, size, stride: (
                (y, x) for y, x in every(shape, size, stride) if y // 1024 in rows)
        recs = tile_slide(slide, out, "synth00000", rle=rle, tile=1024)
        dt = time.perf_counter() - t0
        n_grid = len(rows) * -(-args.width // 1024)
        shutil.rmtree(out, ignore_errors=True)
        return {"seconds": dt, "tile_rows": f"{rows.start}-{rows.stop - 1} of {n_rows}", "grid_tiles": n_grid,
                "kept_tiles": len(recs), "grid_tiles_per_s": n_grid / dt, "kept_tiles_per_s": len(recs) / dt}
    import torch

    if args.phase == "network":
        import numpy as np
        import torch.nn.functional as F

        from lesionlab.data.hubmap import iter_windows
        from lesionlab.data.slides import open_slide
        from lesionlab.data.tiles import tissue_fraction
        from lesionlab.pipelines.wsi import IMAGENET_MEAN, IMAGENET_STD

        net = _network("full")
        mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        patches, read_s, n_read = [], 0.0, 0
        with open_slide(slide) as s:
            for y, x in iter_windows(s.shape, 1024, 768):
                if len(patches) >= args.full_patches:
                    break
                if y < args.height // 3:  # start in the middle third: patches well inside the tissue
                    continue
                tr = time.perf_counter()
                rgb = s.read_region(0, y, x, 1024, 1024)
                n_read += 1
                read_s += time.perf_counter() - tr
                if tissue_fraction(rgb, step=8) >= 0.02:
                    patches.append(rgb)
        tn, cn = time.perf_counter(), time.process_time()
        with torch.no_grad():
            for b in range(0, len(patches), 4):
                batch = torch.from_numpy(np.stack(patches[b:b + 4])).permute(0, 3, 1, 2).float()
                batch = F.interpolate(batch, size=(256, 256), mode="area")
                torch.softmax(net((batch - mean) / std), 1)
        net_s, net_cpu = time.perf_counter() - tn, time.process_time() - cn
        return {"seconds": time.perf_counter() - t0, "tissue_patches": len(patches),
                "network_s": net_s, "network_s_per_patch": net_s / max(len(patches), 1),
                "network_cpu_s_per_patch": net_cpu / max(len(patches), 1),
                "read_s_per_patch": read_s / max(n_read, 1)}
    from lesionlab.pipelines.wsi import segment_slide

    s = segment_slide(slide, _network(args.network, args.weights), os.path.join(args.workdir, "pred"), batch_size=4,
                      patch=args.patch, network_size=args.network_size, progress=True)
    dt = time.perf_counter() - t0
    tm = s["timings"]
    return {"network": args.network, "patch": args.patch, "seconds": dt, "patches": s["patches"],
            "tissue_patches": s["tissue_patches"],
            "patches_per_s": s["patches"] / tm["patches_s"],
            "tissue_patches_per_s": s["tissue_patches"] / tm["patches_s"],
            "patch_loop_s": tm["patches_s"], "read_s": tm["read_s"], "network_s": tm["network_s"],
            "wait_for_read_s": tm["wait_s"], "outputs_s": tm["total_s"] - tm["patches_s"], "glomeruli": s["glomeruli"]}


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=30000)
    p.add_argument("--width", type=int, default=40000)
    p.add_argument("--network", choices=("small", "demo", "full"), default="small",
                   help="network of the whole-slide segment phase (default small: measures the pipeline)")
    p.add_argument("--weights", help="state dict for the segment phase's network (e.g. the demo's models/model.pt: "
                   "realistic masks instead of a random network's noise)")
    p.add_argument("--network-size", type=int, default=256,
                   help="network input side of the segment phase (default 256)")
    p.add_argument("--patch", type=int, default=1024,
                   help="patch side of the segment phase (default 1024; the demo's network: 512 -> 128, same scale)")
    p.add_argument("--full-patches", type=int, default=16,
                   help="tissue patches the paper-size network segments in the network phase (0 skips it)")
    p.add_argument("--tile-rows", type=int, default=0,
                   help="tile only this many rows of 1024-px tiles through the middle of the slide (0: all)")
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument("--workdir", default=None, help="keep files here; an existing slide there is reused "
                   "(default: a temporary folder, removed)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--phase", choices=PHASES, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        result = _phase(args)
        result["peak_rss_mib"] = round(_peak_mib(), 1)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # all threads; wall/cpu shows the machine's load
        print("RESULT " + json.dumps(result))
        return
    import torch

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_wsi_")
    env = {"load_average_1_5_15": [round(v, 2) for v in os.getloadavg()], "cpu_count": os.cpu_count(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "slide": [args.height, args.width]}
    results: dict = {"environment": env}
    phases = [ph for ph in args.phases if not (ph == "network" and args.full_patches <= 0)]
    if "generate" in phases and os.path.isfile(_slide(workdir)):
        print(f"reusing {_slide(workdir)} (generate skipped)")
        phases.remove("generate")
    try:
        print(f"slide {args.height} x {args.width} RGB ({args.height * args.width / 1e6:.0f} Mpx), workdir {workdir}; "
              f"load average {env['load_average_1_5_15']} on {env['cpu_count']} CPUs, torch threads "
              f"{env['torch_threads']}")
        for phase in phases:
            cmd = [sys.executable, __file__, "--phase", phase, "--workdir", workdir, "--height", str(args.height),
                   "--width", str(args.width), "--network", args.network, "--full-patches", str(args.full_patches),
                   "--tile-rows", str(args.tile_rows), "--network-size", str(args.network_size),
                   "--patch", str(args.patch)]
            cmd += ["--weights", args.weights] if args.weights else []
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            res = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
            results[phase] = res
            print(f"{phase:9s} " + "  ".join(f"{k}={_fmt(v)}" for k, v in res.items()))
        env["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
        seg, net = results.get("segment"), results.get("network")
        print("\nsummary")
        peaks = {ph: results[ph]["peak_rss_mib"] for ph in phases}
        print("  peak RSS (MiB): " + ", ".join(f"{ph} {v:.0f}" for ph, v in peaks.items())
              + f"  (goal < 2048: {'met' if max(peaks.values()) < 2048 else 'NOT met'})")
        if "tile" in results:
            t = results["tile"]
            print(f"  tiling (tile rows {t['tile_rows']}): {t['grid_tiles_per_s']:.2f} grid tiles/s, "
                  f"{t['kept_tiles_per_s']:.2f} kept tiles/s ({t['kept_tiles']} of {t['grid_tiles']} kept, "
                  f"{t['seconds']:.0f} s)")
        if seg:
            busy = seg["wait_for_read_s"] / seg["patch_loop_s"]
            print(f"  segmenting ({seg['network']} network, whole slide): {seg['patches_per_s']:.2f} patches/s "
                  f"({seg['tissue_patches_per_s']:.2f} tissue patches/s; {seg['tissue_patches']} of {seg['patches']}"
                  f" patches hold tissue); reader thread {seg['read_s']:.0f} s vs network {seg['network_s']:.0f} s; "
                  f"network idle waiting for reads {seg['wait_for_read_s']:.0f} s ({busy:.0%} of the loop); "
                  f"outputs {seg['outputs_s']:.0f} s")
        if net:
            per = net["network_s_per_patch"]
            n_tissue = seg["tissue_patches"] if seg and seg["patch"] == 1024 else None
            line = (f"  full CBAM-PSPNet: {per:.2f} s per tissue patch, {net['network_cpu_s_per_patch']:.2f} s of CPU "
                    f"({net['tissue_patches']} patches measured), "
                    f"read {net['read_s_per_patch']:.3f} s per patch")
            if n_tissue:
                est = n_tissue * per
                results["full_network_slide_estimate_s"] = round(est, 1)
                line += f"; whole slide extrapolated: {n_tissue} x {per:.2f} s = {est / 60:.0f} min (not run)"
            print(line)
        if args.json:
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=2)
            print(f"  results: {args.json}")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
