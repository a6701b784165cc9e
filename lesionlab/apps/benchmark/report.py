"""The results read out: the goals (:func:`goals`), the markdown tables (:func:`markdown`) and the PNG plots."""

from __future__ import annotations

import os
from typing import Any

from lesionlab.apps.benchmark.end_to_end import STROKE_DEPTH
from lesionlab.utils import save_figure

#: goal thresholds (ratios): training GFLOP/s / peak, share of volume-inference time outside the network,
#: ours / peer time for a peer of the same architecture
TRAIN_PEAK_GOAL = 0.60
OUTSIDE_GOAL = 0.10
PEER_GOAL = 1.0


# ----------------------------------------------------------------------------------------------------------- goals
def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal, its subject, the measured ratio, the target and pass/fail."""
    rows: list[dict[str, Any]] = []
    for r in results["networks"]:
        if r.get("conv") and "formats" in r:
            v = r["formats"][r["best_format"]]["train_peak_ratio"]
            rows.append({"goal": "training step >= 60 % of conv peak", "subject": r["name"], "value": v,
                         "target": f">= {TRAIN_PEAK_GOAL:.2f}", "pass": v >= TRAIN_PEAK_GOAL})
    e2e = results.get("end_to_end", {})
    for r in e2e.get("slice25d", []):
        if r.get("default"):
            rows.append({"goal": "volume inference <= 10 % outside the network", "subject": f"2.5D {r['network']}",
                         "value": r["outside_share"], "target": f"<= {OUTSIDE_GOAL:.2f}",
                         "pass": r["outside_share"] <= OUTSIDE_GOAL})
    sw = e2e.get("sliding_window_3d")
    if sw and "outside_share" in sw:
        rows.append({"goal": "volume inference <= 10 % outside the network", "subject": "3D sliding window UNet3D",
                     "value": sw["outside_share"], "target": f"<= {OUTSIDE_GOAL:.2f}",
                     "pass": sw["outside_share"] <= OUTSIDE_GOAL})
    for p in results["peers"]:
        if p.get("same_architecture") and "train_ratio" in p:
            v = max(p["train_ratio"], p["forward_ratio"])
            rows.append({"goal": "no peer of the same architecture faster (time ours/peer)",
                         "subject": f"{p['ours']} vs {p['peer']}", "value": v, "target": f"<= {PEER_GOAL:.2f}",
                         "pass": v <= PEER_GOAL})
    return rows


# -------------------------------------------------------------------------------------------------------- reports
def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables."""
    m, pk = results["machine"], results["peak"]
    lines = [f"# Benchmark results ({'quick' if results['settings']['quick'] else 'full'} run)", "",
             f"Machine: {m['processor']} ({m['cpu_count']} CPUs), torch {m['torch']}, MONAI {m['monai']}, "
             f"{m['threads']} threads, device {results['settings'].get('device', 'cpu')}"
             f"{', AMP' if results['settings'].get('amp') else ''}; "
             f"load average before {m['load_before']}, after {m['load_after']}; "
             f"{m['date']}; {results['settings']['elapsed_s']:.0f} s.", "",
             f"Conv peak ({'x'.join(map(str, pk['input_shape']))} 3x3 conv): contiguous "
             f"{pk['contiguous']['gflops']:.1f} GFLOP/s, channels_last {pk['channels_last']['gflops']:.1f} GFLOP/s "
             f"({pk['best_format']} best); at the end of the run {results['peak_end']['gflops']:.1f} GFLOP/s "
             f"({results['peak_end']['best_format']}) -> reference (the faster) "
             f"**{results['reference_gflops']:.1f} GFLOP/s**.", "",
             f"Memory: {results['memory_method']}. FLOPs: FlopCounterMode (matmul/conv only, backward included "
             "for train).", "",
             "| network | input | GFLOP fwd/sample | fwd ms/sample | train ms/sample | fwd GFLOP/s (% peak) "
             "| train GFLOP/s (% peak) | train peak MiB | channels_last train speed-up | best |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["networks"]:
        if "formats" not in r:
            lines.append(f"| {r['name']} | - | - | - | - | - | - | - | - | error: {r.get('error', '')} |")
            continue
        b = r["formats"][r["best_format"]]
        cont, cl = r["formats"]["contiguous"], r["formats"]["channels_last"]
        reduced = r["input_shape"][2:] != r["paper_input_shape"][2:]
        lines.append(
            f"| {r['name']} | {'x'.join(map(str, r['input_shape']))}"
            f"{' (paper ' + 'x'.join(map(str, r['paper_input_shape'][2:])) + ')' if reduced else ''} "
            f"| {r['flops_forward'] / r['batch'] / 1e9:.2f} "
            f"| {b['forward_s_per_sample'] * 1e3:.0f} | {b['train_s_per_sample'] * 1e3:.0f} "
            f"| {b['forward_gflops']:.1f} ({b['forward_peak_ratio']:.0%}) "
            f"| {b['train_gflops']:.1f} ({b['train_peak_ratio']:.0%}) | {b['train_peak_mib']:.0f} "
            f"| {cont['train_s_per_sample'] / cl['train_s_per_sample']:.2f}x | {r['best_format']} |")
    if results["peers"]:
        lines += ["", "| ours | peer | same architecture | GFLOP fwd ours / peer | fwd ms ours / peer "
                  "| train ms ours / peer | ratio fwd | ratio train | note |",
                  "|---|---|---|---:|---:|---:|---:|---:|---|"]
        for p in results["peers"]:
            if "error" in p:
                lines.append(f"| {p['ours']} | {p['peer']} | {p['same_architecture']} | - | - | - | - | - "
                             f"| not measured: {p['error']} |")
                continue
            lines.append(f"| {p['ours']} | {p['peer']} | {p['same_architecture']} "
                         f"| {p['ours_flops_forward'] / 1e9:.1f} / {p['peer_flops_forward'] / 1e9:.1f} "
                         f"| {p['ours_forward_s'] * 1e3:.0f} / {p['peer_forward_s'] * 1e3:.0f} "
                         f"| {p['ours_train_s'] * 1e3:.0f} / {p['peer_train_s'] * 1e3:.0f} "
                         f"| {p['forward_ratio']:.2f} | {p['train_ratio']:.2f} | {p['note']} |")
    e2e = results.get("end_to_end", {})
    if e2e.get("slice25d"):
        lines += ["", "| 2.5D volume inference | slices measured | sw_batch_size | grad mode | channels_last "
                  "| s measured | s per 189-slice volume | outside the network |",
                  "|---|---:|---:|---|---|---:|---:|---:|"]
        for r in e2e["slice25d"]:
            lines.append(f"| {r['network']}{' (bundle path)' if r.get('default') else ''} | {r['slices']} "
                         f"| {r['sw_batch_size']} | {r['grad_mode']} | {r['channels_last']} | {r['seconds']:.1f} "
                         f"| {r['seconds_per_volume']:.1f} | {r['outside_share']:.1%} |")
    sw = e2e.get("sliding_window_3d")
    if sw and "seconds" in sw:
        lines += ["", f"3D sliding window (UNet3D, volume {'x'.join(map(str, sw['volume']))}, roi "
                  f"{'x'.join(map(str, sw['roi']))}, overlap {sw['overlap']}): {sw['seconds']:.1f} s per volume, "
                  f"{sw['outside_share']:.1%} outside the network."]
    w = e2e.get("wsi")
    if w:
        if "error" in w:
            lines += ["", f"Whole slide: not measured ({w['error']})."]
        else:
            lines += ["", f"Whole slide ({w['height']} x {w['width']}, bench_wsi.py phases, small CBAM-PSPNet): "
                      f"tiling {w['tile']['tiles_per_s']:.2f} tiles/s (1024^2), segmentation "
                      f"{w['segment']['patches_per_s']:.2f} patches/s (network {w['segment']['network_s']:.1f} s of "
                      f"{w['segment']['seconds']:.1f} s)."]
    dl = e2e.get("data_loader")
    if dl:
        lines += ["", f"| data loader ({dl['volumes']} NIfTI volumes {'x'.join(map(str, dl['shape']))}) | build s "
                  "| first epoch samples/s | steady samples/s |", "|---|---:|---:|---:|"]
        for k in ("Dataset", "CacheDataset", "PersistentDataset"):
            lines.append(f"| {k} | {dl[k]['build_s']:.2f} | {dl[k]['first_epoch_samples_per_s']:.2f} "
                         f"| {dl[k]['steady_samples_per_s']:.2f} |")
    lines += ["", "| goal | subject | measured | target | result |", "|---|---|---:|---|---|"]
    for g in results["goals"]:
        lines.append(f"| {g['goal']} | {g['subject']} | {g['value']:.2f} | {g['target']} "
                     f"| {'pass' if g['pass'] else '**fail**'} |")
    return "\n".join(lines) + "\n"


def plots(results: dict[str, Any], folder: str | os.PathLike, prefix: str = "bench") -> list[str]:
    """Bar charts: ratio to peak per network; time inside/outside the network per volume; data-loader samples/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    nets = [r for r in results["networks"] if "formats" in r]
    if nets:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        names = [r["name"] for r in nets]
        pos = range(len(nets))
        for i, (fmt, hatch) in enumerate((("contiguous", ""), ("channels_last", "//"))):
            for j, (kind, color) in enumerate((("forward", "tab:blue"), ("train", "tab:orange"))):
                vals = [r["formats"][fmt][f"{kind}_peak_ratio"] * 100 for r in nets]
                ax.bar([p + (2 * i + j - 1.5) * 0.2 for p in pos], vals, 0.2, color=color, hatch=hatch,
                       edgecolor="black", linewidth=0.4, label=f"{kind}, {fmt}")
        ax.axhline(TRAIN_PEAK_GOAL * 100, color="red", linestyle="--", linewidth=1, label="training goal (60 %)")
        ax.set_xticks(list(pos))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"% of conv peak ({results['reference_gflops']:.0f} GFLOP/s)")
        ax.set_title("Achieved GFLOP/s relative to the machine's 3x3-conv peak")
        ax.legend(fontsize=7, ncol=3)
        fig.tight_layout()
        out.append(save_figure(fig, os.path.join(folder, f"{prefix}_peak_ratio.png")))
    e2e = results.get("end_to_end", {})
    rows = [(f"2.5D {r['network']}" + ("" if r.get("default") else f" (sw {r['sw_batch_size']}, {r['grad_mode']}"
                                        f"{', CL' if r['channels_last'] else ''})"),
             r["network_s"] / r["slices"] * STROKE_DEPTH, (r["seconds"] - r["network_s"]) / r["slices"] * STROKE_DEPTH)
            for r in e2e.get("slice25d", [])]
    sw = e2e.get("sliding_window_3d")
    if sw and "seconds" in sw:
        rows.append(("3D sliding window UNet3D", sw["network_s"], sw["seconds"] - sw["network_s"]))
    if rows:
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
        y = range(len(rows))
        ax.barh(list(y), [r[1] for r in rows], color="tab:blue", label="network")
        ax.barh(list(y), [r[2] for r in rows], left=[r[1] for r in rows], color="tab:gray", label="outside")
        ax.set_yticks(list(y))
        ax.set_yticklabels([r[0] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("seconds per volume")
        ax.set_title("Volume inference: time in and outside the network")
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append(save_figure(fig, os.path.join(folder, f"{prefix}_volume_inference.png")))
    dl = e2e.get("data_loader")
    if dl:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        kinds = ["Dataset", "CacheDataset", "PersistentDataset"]
        ax.bar([k - 0.2 for k in range(3)], [dl[k]["first_epoch_samples_per_s"] for k in kinds], 0.4,
               label="first epoch (incl. caching)")
        ax.bar([k + 0.2 for k in range(3)], [dl[k]["steady_samples_per_s"] for k in kinds], 0.4,
               label="later epochs")
        ax.set_xticks(range(3))
        ax.set_xticklabels(kinds)
        ax.set_ylabel("samples / s")
        ax.set_title("Data loading (NIfTI, resample + normalise, random crop)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append(save_figure(fig, os.path.join(folder, f"{prefix}_data_loader.png")))
    return out
