"""One run of the suite (:func:`run`) and its command line (``lesionlab bench`` / ``bench/run.py``)."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from lesionlab.apps.benchmark import measure
from lesionlab.apps.benchmark.end_to_end import STROKE_DEPTH, data_loader, slice25d_volume, sliding_window_3d, wsi
from lesionlab.apps.benchmark.measure import (
    MEMORY_FALLBACK,
    MEMORY_METHOD,
    _importable,
    _reset_peak,
    bench_network,
    peak_conv,
)
from lesionlab.apps.benchmark.registry import NETWORKS, PEERS
from lesionlab.apps.benchmark.report import goals, markdown, plots
from lesionlab.utils import atomic_write_text


# ------------------------------------------------------------------------------------------------------------ run
def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _rescale(results: dict[str, Any]) -> None:
    """Reference = the faster of the conv peaks measured at the start and at the end; every ratio is recomputed."""
    ref = max(results["peak"]["gflops"], results["peak_end"]["gflops"])
    results["reference_gflops"] = ref
    for row in results["networks"]:
        for f in row.get("formats", {}).values():
            for kind in ("forward", "train"):
                if f"{kind}_gflops" in f:
                    f[f"{kind}_peak_ratio"] = f[f"{kind}_gflops"] / ref


def _write_partial(out: Path, results: dict[str, Any]) -> None:
    """The results so far (``"partial": true``), so that an interrupted run leaves what it measured."""
    atomic_write_text(out, json.dumps({**results, "partial": True}, indent=1) + "\n")


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run(out: str | os.PathLike = "bench/results.json", quick: bool = False, threads: int | None = None,
        compile_: bool = False, networks: Sequence[str] | None = None, repeats: int = 3, min_seconds: float = 2.0,
        slices: int | None = None, end_to_end: bool = True, wsi_size: Sequence[int] | None = None,
        bench_wsi: str | os.PathLike | None = None, plot: bool = True, whole_slide: bool = True,
        max_train_gflop: float | None = None, device: str | torch.device = "cpu",
        amp: bool = False) -> dict[str, Any]:
    """Run the suite and write ``out`` (JSON), ``out`` with ``.md`` (markdown table) and the plots next to it.

    Args:
        out: the JSON results file; the markdown table and the PNG plots go next to it.
        quick: tiny widths and inputs (a smoke run; well under two minutes on two cores).
        threads: ``torch.set_num_threads`` for the run (default: torch's default).
        compile_: also time each network through ``torch.compile`` (slow to compile on a CPU).
        networks: names of :data:`NETWORKS` rows to run (default all); peers and end-to-end rows follow them.
        repeats, min_seconds: at most ``repeats`` timed runs, stopping once ``min_seconds`` have accumulated.
        slices: slices of the 2.5D volumes actually run (default 189; seconds per volume are scaled to 189).
        end_to_end: run the end-to-end measurements.
        wsi_size: (height, width) of the synthetic slide (default 4096 x 4096; 1024 x 1024 in quick mode).
        bench_wsi: path of ``bench_wsi.py`` (default: the source tree's ``bench/bench_wsi.py``).
        whole_slide: run the whole-slide phases (three subprocesses).
        max_train_gflop: run networks whose training step at the paper size counts more GFLOPs at a halved spatial
            size (repeatedly, down to 64; the table marks them) to bound the run time on a slow or loaded machine.
        device: ``"cpu"`` or ``"cuda"`` (timings synchronise the device; peak memory is then torch's device
            allocator peak).
        amp: run forward passes under autocast (float16 on CUDA, bfloat16 on CPU); the peak conv too.
        plot: write the PNG plots.
    """
    import monai

    t_start = time.perf_counter()
    measure._RUN.update(device=torch.device(device), amp=bool(amp))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wanted = set(networks) if networks else None
    unknown = (wanted or set()) - {n.name for n in NETWORKS}
    if unknown:
        raise ValueError(f"unknown network(s) {sorted(unknown)}; choose from {[n.name for n in NETWORKS]}")
    if not _reset_peak():
        _progress("note: /proc/self/clear_refs not writable; memory figures are ru_maxrss growth (upper bounds)")
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "monai": monai.__version__, "threads": threads or torch.get_num_threads(), "load_before": _load(),
                    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")},
        "settings": {"quick": quick, "compile": compile_, "repeats": repeats, "min_seconds": min_seconds,
                     "max_train_gflop": max_train_gflop, "slices": slices, "threads": threads,
                     "device": str(torch.device(device)), "amp": bool(amp)},
        "memory_method": ("torch.cuda.max_memory_allocated over the phase's starting allocation"
                          if torch.device(device).type == "cuda"  # ok: reads the --device the user gave
                          else MEMORY_METHOD if _reset_peak() else MEMORY_FALLBACK),
        "networks": [], "peers": [], "end_to_end": {},
    }
    with _threads(threads):
        _progress("conv peak")
        results["peak"] = peak_conv(quick, repeats, min_seconds)
        peak = results["peak"]["gflops"]
        _progress(f"conv peak {peak:.1f} GFLOP/s ({results['peak']['best_format']})")
        for net in NETWORKS:
            if wanted and net.name not in wanted:
                continue
            _progress(f"network {net.name}")
            shape = net.quick_shape if quick else net.input_shape
            row: dict[str, Any] = {"name": net.name, "source": net.source, "conv": net.conv}
            t_row = time.perf_counter()
            try:
                row.update(bench_network(net.quick_build if quick else net.build, shape, peak, repeats, min_seconds,
                                         compile_, None if quick else max_train_gflop, net.resizable))
            except Exception as err:  # noqa: BLE001 - one failing network is reported, the suite goes on
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            row["elapsed_s"] = time.perf_counter() - t_row
            results["networks"].append(row)
            _write_partial(out, results)
        ours = {r["name"]: r for r in results["networks"] if "formats" in r}
        for peer in PEERS:
            if peer.ours not in ours:
                continue
            _progress(f"peer {peer.name}")
            prow: dict[str, Any] = {"ours": peer.ours, "peer": peer.name, "same_architecture": peer.same_architecture,
                                    "note": peer.note}
            why = _importable(peer.requires)
            if why:
                prow["error"] = f"{peer.requires} does not import ({why})"
                results["peers"].append(prow)
                continue
            o = ours[peer.ours]
            try:
                # ours again right before the peer: on a loaded machine the load drifts between the network rows and
                # the peers, and only measurements taken side by side compare
                net = next(n for n in NETWORKS if n.name == peer.ours)
                o = bench_network(net.quick_build if quick else net.build, o["input_shape"], peak, repeats,
                                  min_seconds, resizable=False)
                p = bench_network(peer.quick_build if quick else peer.build, o["input_shape"], peak, repeats,
                                  min_seconds)
            except Exception as err:  # noqa: BLE001 - a peer that fails on our input is reported, not fatal
                prow["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                results["peers"].append(prow)
                continue
            ob, pb = o["formats"][o["best_format"]], p["formats"][p["best_format"]]
            prow.update({"peer_best_format": p["best_format"], "peer_flops_forward": p["flops_forward"] / o["batch"],
                         "ours_flops_forward": o["flops_forward"] / o["batch"],
                         "ours_forward_s": ob["forward_s_per_sample"], "peer_forward_s": pb["forward_s_per_sample"],
                         "ours_train_s": ob["train_s_per_sample"], "peer_train_s": pb["train_s_per_sample"],
                         "forward_ratio": ob["forward_s_per_sample"] / pb["forward_s_per_sample"],
                         "train_ratio": ob["train_s_per_sample"] / pb["train_s_per_sample"]})
            results["peers"].append(prow)
        _write_partial(out, results)
        if end_to_end:
            results["end_to_end"] = _end_to_end(results, quick, slices, wanted, wsi_size,
                                                bench_wsi if whole_slide else False)
        _progress("conv peak again")
        results["peak_end"] = peak_conv(quick, repeats, min_seconds)
        _rescale(results)
    results["machine"]["load_after"] = _load()
    results["settings"]["elapsed_s"] = time.perf_counter() - t_start
    results["goals"] = goals(results)
    results["table"] = str(out.with_suffix(".md"))
    results["plots"] = plots(results, out.parent, prefix=out.stem) if plot else []
    atomic_write_text(out, json.dumps(results, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(results))
    return results


def _end_to_end(results: dict[str, Any], quick: bool, slices: int | None, wanted: set[str] | None,
                wsi_size: Sequence[int] | None, bench_wsi: str | os.PathLike | None | bool) -> dict[str, Any]:
    e2e: dict[str, Any] = {"slice25d": []}
    by_name = {n.name: n for n in NETWORKS}
    size = 32 if quick else 192
    depth = slices or (24 if quick else STROKE_DEPTH)
    # the bundles' inference path: batched slices (sw_batch_size 16), inference_mode, each network's best format
    for name in ("DUNet", "AGMRNet", "TSRLNet"):
        if wanted and name not in wanted:
            continue
        _progress(f"2.5D volume {name}")
        net = by_name[name]
        model = (net.quick_build if quick else net.build)()
        # the bundles' path: Slice25DInferer(sw_batch_size=16) under MONAI's evaluator (eval_mode: torch.no_grad),
        # contiguous tensors; on D-UNet also each alternative, one change at a time, on the same slices
        rows = [{"default": True, "sw_batch_size": 16, "grad_mode": "no_grad", "channels_last": False}]
        if name == "DUNet":
            rows += [{"sw_batch_size": 1, "grad_mode": "no_grad", "channels_last": False},
                     {"sw_batch_size": 16, "grad_mode": "inference", "channels_last": False},
                     {"sw_batch_size": 16, "grad_mode": "no_grad", "channels_last": True}]
        for opts in rows:
            d = depth
            r = slice25d_volume(model, size, d, opts["sw_batch_size"], opts["grad_mode"], opts["channels_last"])
            r.update(network=name, default=bool(opts.get("default")),
                     seconds_per_volume=r["seconds"] / d * STROKE_DEPTH)
            e2e["slice25d"].append(r)
    if not wanted or "UNet3D (MONAI)" in wanted:
        _progress("3D sliding window")
        net = by_name["UNet3D (MONAI)"]
        torch.manual_seed(0)
        e2e["sliding_window_3d"] = sliding_window_3d(
            (net.quick_build if quick else net.build)(), (40, 40, 40) if quick else (182, 218, 182),
            (16, 16, 16) if quick else (96, 96, 96))
    _progress("data loader")
    with tempfile.TemporaryDirectory(prefix="lesionlab_bench_dl_") as tmp:
        e2e["data_loader"] = data_loader(tmp, 4 if quick else 8, (24, 24, 24) if quick else (160, 192, 160),
                                         (16, 16, 16) if quick else (96, 96, 96))
    if bench_wsi is False:
        return e2e
    _progress("whole slide (bench_wsi.py phases)")
    script = (Path(bench_wsi) if isinstance(bench_wsi, (str, os.PathLike))
              else Path(__file__).resolve().parents[3] / "bench" / "bench_wsi.py")
    h, w = wsi_size or ((1024, 1024) if quick else (4096, 4096))
    e2e["wsi"] = wsi(script, h, w)
    return e2e


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``lesionlab bench`` / ``python bench/run.py``."""
    from lesionlab.apps import benchmark  # the package docstring describes the suite

    p = parser or argparse.ArgumentParser(prog="bench/run.py", description=benchmark.__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results.json", help="results JSON; the .md table and PNG plots go next to "
                   "it (default: bench/results.json)")
    p.add_argument("--quick", action="store_true", help="tiny widths and inputs: a smoke run (< 2 min)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the run")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on a CPU)")
    p.add_argument("--networks", nargs="+", metavar="NAME", help=f"rows to run (default all: "
                   f"{', '.join(n.name for n in NETWORKS)})")
    p.add_argument("--repeats", type=int, default=3, help="at most this many timed runs per phase (default 3)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="stop timing a phase after this many seconds")
    p.add_argument("--slices", type=int, default=None, help="slices of the 2.5D volumes actually run "
                   f"(default {STROKE_DEPTH}; seconds per volume are scaled to {STROKE_DEPTH})")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--amp", action="store_true", help="forward passes under autocast (float16 on CUDA)")
    p.add_argument("--max-train-gflop", type=float, default=None, help="halve the input size of networks whose "
                   "training step counts more GFLOPs (bounds the run time on a slow machine; default: paper sizes)")
    p.add_argument("--no-end-to-end", action="store_true", help="skip the volume, slide and data-loader rows")
    p.add_argument("--no-wsi", action="store_true", help="skip the whole-slide phases")
    p.add_argument("--wsi-size", type=int, nargs=2, metavar=("H", "W"), help="synthetic slide size (default 4096 4096)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def main_from_args(args: argparse.Namespace) -> int:
    """Run with parsed options and print the markdown table."""
    res = run(args.out, quick=args.quick, threads=args.threads, compile_=args.compile, networks=args.networks,
              repeats=args.repeats, min_seconds=args.min_seconds, slices=args.slices,
              end_to_end=not args.no_end_to_end, wsi_size=args.wsi_size, plot=not args.no_plots,
              whole_slide=not args.no_wsi, max_train_gflop=args.max_train_gflop,
              device=args.device, amp=args.amp)
    print(Path(res["table"]).read_text())
    print(f"wrote {args.out}, {res['table']}" + "".join(f", {p}" for p in res["plots"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return main_from_args(build_parser().parse_args(argv))
