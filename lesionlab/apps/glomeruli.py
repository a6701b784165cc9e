"""Glomerulus segmentation commands: ``lesionlab demo --task glomeruli`` and ``lesionlab wsi`` (whole slides).

``run_glomeruli_demo``: synthesise PAS-like slides in the HuBMAP layout -> tile them (1024-equivalent tiles, by-slide
split) -> copy the CBAM-PSPNet bundle -> train (MONAI ``SupervisedTrainer``, iteration-based, warm-up + poly LR) ->
evaluate the validation tiles (dataset-level confusion-matrix scores, confusion-matrix PNG) -> segment a whole slide
with the trained weights (OME-TIFF, RLE, GeoJSON) -> overlay figure (slide thumbnail with true and predicted outlines,
training curves).

CPU budget: the demo trains a reduced CBAM-PSPNet (one bottleneck per stage, width 16, pyramid branches of 32
channels; about 0.9 M parameters instead of 51 M) at a reduced scale (512-pixel tiles -> 128 network input, the same
1/4 scale as 1024 -> 256) for a few hundred iterations. ``--full-size`` trains the paper's network (hours on a CPU).

``segment_slides``: load a bundle's inference network (and ``models/model.pt``) and run
:func:`lesionlab.pipelines.wsi.segment_slide` on every slide given.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from lesionlab.apps.bundle import bundle_path, copy_bundle, run_bundle, set_config_values
from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_write_text, get_device

__all__ = ["run_glomeruli_demo", "segment_slides", "load_bundle_network", "GLOMERULI_BUNDLE", "DEMO_NETWORK"]

GLOMERULI_BUNDLE = "kidney_pas_pspnet_cbam_glomeruli_segmentation"
#: reduced network of the demo and the learns test (overrides of network_def)
DEMO_NETWORK = {"layers": [1, 1, 1, 1], "width": 16, "ppm_channels": 32, "head_channels": 64, "aux_channels": 32}


def load_bundle_network(bundle: str, ckpt: str | None = None, device: str = "cpu",
                        overrides: dict[str, Any] | None = None) -> tuple[Any, dict]:
    """The eval-mode network of a bundle's inference config with its trained weights, and the config values needed
    for whole-slide inference (``network_size``, ``imagenet_mean``, ``imagenet_std``)."""
    import torch
    from monai.bundle import ConfigParser

    root = bundle_path(bundle)
    parser = ConfigParser()
    parser.read_config(os.path.join(root, "configs", "inference.json"))
    parser["bundle_root"] = root
    parser["device"] = str(get_device(device))
    for k, v in (overrides or {}).items():
        parser[k] = v
    net = parser.get_parsed_content("network_def")
    ckpt = ckpt or os.path.join(root, "models", "model.pt")
    if not os.path.isfile(ckpt):
        raise LesionlabError(f"{ckpt}: no trained weights (train the bundle first, or pass --ckpt)")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    net.load_state_dict(state.get("model", state) if isinstance(state, dict) and "model" in state else state)
    net = net.to(get_device(device)).eval()
    cfg = {k: parser.get_parsed_content(k) for k in ("network_size", "imagenet_mean", "imagenet_std")}
    return net, cfg


def segment_slides(bundle: str, slides: Sequence[str], out_dir: str, ckpt: str | None = None, device: str = "cpu",
                   overrides: dict[str, Any] | None = None, **kwargs: Any) -> list[dict]:
    """Whole-slide inference with a bundle on each slide; returns the per-slide summaries."""
    from lesionlab.pipelines.wsi import segment_slide

    net, cfg = load_bundle_network(bundle, ckpt, device, overrides)
    kwargs.setdefault("network_size", int(cfg["network_size"]))
    out = []
    for path in slides:
        s = segment_slide(path, net, out_dir, device=get_device(device), mean=cfg["imagenet_mean"],
                          std=cfg["imagenet_std"], **kwargs)
        print(f"{s['id']}: {s['glomeruli']} glomeruli, {s['total_area_px']:.0f} px^2"
              + (f" ({s['total_area_um2']:.0f} um^2)" if s["total_area_um2"] else "")
              + f"; read {s['timings']['read_s']:.1f} s, network {s['timings']['network_s']:.1f} s")
        out.append(s)
    atomic_write_text(os.path.join(out_dir, "summary.json"), json.dumps(out, indent=2))
    return out


def _overlay_figure(slide_path: str, truth_rle: str | None, pred_rle: str, history: str, out_png: str,
                    title: str) -> str:
    """Slide thumbnail with true (green) and predicted (magenta) glomerulus outlines, plus training curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from skimage.segmentation import find_boundaries

    from lesionlab.data.hubmap import rle_decode
    from lesionlab.data.slides import open_slide
    from lesionlab.utils import save_figure

    with open_slide(slide_path) as slide:
        height, width = slide.shape
        step = max(1, int(np.ceil(max(height, width) / 1500)))
        lvl = slide.best_level(step)
        ds = slide.levels[lvl].downsample
        sub = max(1, int(step / ds))
        thumb = slide.read_region(lvl, 0, 0, *slide.levels[lvl].shape)[::sub, ::sub]
    img = thumb.astype(np.float32) / 255.0
    for rle, colour in ((truth_rle, (0.1, 0.8, 0.1)), (pred_rle, (0.9, 0.0, 0.9))):
        if rle is None:
            continue
        m = rle_decode(rle, (height, width))[::step, ::step][: img.shape[0], : img.shape[1]]
        edge = find_boundaries(m, mode="thick")
        img[edge] = colour
    hist = json.load(open(history))["epochs"] if os.path.exists(history) else []
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.6, 1]})
    axes[0].imshow(img)
    axes[0].set_title("green: annotation, magenta: prediction")
    axes[0].axis("off")
    if hist:
        it = [h["iteration"] if "iteration" in h else h["epoch"] for h in hist]
        axes[1].plot(it, [h["loss"] for h in hist], "o-", label="training loss")
        for key in ("Dice_glomerulus", "IoU_glomerulus", "mIoU"):
            if key in hist[0]:
                axes[1].plot(it, [h.get(key, np.nan) for h in hist], "s--", label=f"validation {key}")
        axes[1].set_xlabel("evaluation (every val_interval_iterations)")
        axes[1].legend()
        axes[1].grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)
    return out_png


def run_glomeruli_demo(workdir: str = "demo_glomeruli", n_slides: int = 4, slide_shape: Sequence[int] = (2048, 3072),
                       iterations: int = 300, batch_size: int = 4, full_size: bool = False, seed: int = 0) -> dict:
    """Run the glomerulus demo and return its summary (also written to ``summary.json``)."""
    from lesionlab.data.hubmap import read_train_csv
    from lesionlab.data.synthetic import synth_hubmap
    from lesionlab.data.tiles import tile_hubmap

    t0 = time.time()
    workdir = os.path.abspath(workdir)
    raw, tiles = os.path.join(workdir, "data", "hubmap_synthetic"), os.path.join(workdir, "data", "tiles")
    bundle_root = os.path.join(workdir, GLOMERULI_BUNDLE)
    tile, size = (1024, 256) if full_size else (512, 128)
    print(f"[1/6] synthesising {n_slides} PAS-like slides ({slide_shape[0]} x {slide_shape[1]}) -> {raw}")
    synth_hubmap(raw, n_slides=n_slides, shape=tuple(slide_shape), seed=seed, progress=True)
    print(f"[2/6] tiling ({tile} x {tile}, blank tiles dropped, split by slide) -> {tiles}")
    datalist = json.load(open(tile_hubmap(raw, tiles, tile=tile, seed=seed)))
    val_slides = sorted({r["slide"] for r in datalist["validation"]})
    print(f"      {len(datalist['training'])} training / {len(datalist['validation'])} validation tiles "
          f"(validation slides {val_slides})")
    print(f"[3/6] preparing the bundle in {bundle_root}")
    copy_bundle(GLOMERULI_BUNDLE, bundle_root)
    net_over = {} if full_size else {f"network_def#{k}": v for k, v in DEMO_NETWORK.items()}
    set_config_values(bundle_root, {**net_over, "network_size": size})
    set_config_values(bundle_root, {"crop_size": [size, size]}, configs=("train",))
    common = {"dataset_dir": tiles, "seed": seed}
    print(f"[4/6] training CBAM-PSPNet for {iterations} iterations (batch {batch_size}) on the CPU")
    t_train = time.time()
    run_bundle(bundle_root, "train", iterations=iterations, val_interval_iterations=max(1, iterations // 4),
               warmup_iterations=max(1, iterations // 20), batch_size=batch_size, **common)
    t_train = time.time() - t_train
    print("[5/6] evaluating the validation tiles (dataset-level confusion matrix)")
    run_bundle(bundle_root, "evaluate", **common)
    eval_dir = os.path.join(bundle_root, "eval")
    scores = json.load(open(os.path.join(eval_dir, "scores.json")))
    print(f"[6/6] whole-slide inference on the validation slide {val_slides[0]}")
    slide_path = os.path.join(raw, "train", f"{val_slides[0]}.tiff")
    wsi_dir = os.path.join(workdir, "wsi")
    summary = segment_slides(bundle_root, [slide_path], wsi_dir, patch=tile, network_size=size)[0]
    truth = read_train_csv(os.path.join(raw, "train.csv"))[val_slides[0]]
    pred = read_train_csv(os.path.join(wsi_dir, "submission.csv"))[val_slides[0]]
    from lesionlab.data.hubmap import rle_decode

    shape = tuple(summary["shape"])
    t_mask, p_mask = rle_decode(truth, shape), rle_decode(pred, shape)
    slide_dice = float(2 * (t_mask & p_mask).sum() / max(t_mask.sum() + p_mask.sum(), 1))
    glom = scores["per_class"]["glomerulus"]
    with open(os.path.join(raw, "train", f"{val_slides[0]}.json")) as f:
        n_true = len(json.load(f)["features"])
    fig = _overlay_figure(slide_path, truth, pred, os.path.join(eval_dir, "history.json"),
                          os.path.join(workdir, "demo_figure.png"),
                          f"CBAM-PSPNet demo (synthetic): tile Dice {glom['Dice']:.3f}, "
                          f"whole-slide Dice {slide_dice:.3f}")
    result = {
        "wall_time_s": round(time.time() - t0, 1), "train_time_s": round(t_train, 1), "iterations": iterations,
        "network": "paper size" if full_size else DEMO_NETWORK,
        "validation_tiles": {"mIoU": scores["mIoU"], "mDice": scores["mDice"], "aAcc": scores["aAcc"],
                             "glomerulus_IoU": glom["IoU"], "glomerulus_Dice": glom["Dice"]},
        "whole_slide": {"id": val_slides[0], "dice": slide_dice, "glomeruli_predicted": summary["glomeruli"],
                        "glomeruli_true": n_true},
        "paths": {"bundle": bundle_root, "scores": os.path.join(eval_dir, "scores.md"),
                  "confusion_matrix": os.path.join(eval_dir, "confusion_matrix.png"), "wsi": wsi_dir,
                  "figure_png": fig, "tensorboard": os.path.join(eval_dir, "tensorboard")},
    }
    atomic_write_text(os.path.join(workdir, "summary.json"), json.dumps(result, indent=2))
    print("\n" + open(os.path.join(eval_dir, "scores.md")).read())
    print(f"demo finished in {result['wall_time_s']:.0f} s; whole-slide Dice {slide_dice:.3f}; outputs:")
    for k, v in result["paths"].items():
        print(f"  {k:17s} {v}")
    return result
