"""Synthetic paediatric renograms: dynamic DICOM NM studies with parenchyma masks and a known split function.

Each study is a posterior-view gamma-camera acquisition of ``size x size`` pixels in two phases (60 frames of 1 s,
then 77 frames of 15 s: 137 frames over 20 min, the "about 136 images per person" of seed 003 §2.2), written as one
real DICOM NM multi-frame file (:func:`lesionlab.data.nm_dicom.write_nm_dynamic`). The scene:

* two kidneys (bean-shaped: an ellipse with a medial hilum notch and a smooth random boundary), each split into
  **cortex/parenchyma** and a **pelvis** (collecting system) near the hilum; the patient's left kidney is on the
  image's left (posterior view) and the right kidney sits a little lower;
* a bladder, the heart's blood pool at the top edge, liver and spleen, and the body outline as background;
* tracer time-activity curves: a blood curve (first-pass bolus, then two exponentials), parenchymal uptake with a
  per-kidney transit time and washout (sometimes an obstructed, slowly draining kidney), delayed pelvic filling and
  a rising bladder curve;
* a camera blur (Gaussian, FWHM about 2 pixels) and Poisson counts.

The **split function** (relative uptake of the left kidney, %) is drawn per study between 25 and 75 % (a quarter of
the studies lie outside 40-60 %, i.e. are abnormal). Its ground truth in ``truth.json`` is the share of the
noise-free, un-blurred *parenchymal* counts of the left kidney in the uptake window 60-120 s after the start of
acquisition (the 1-2 min window of MAG3 / DTPA renography), which is what a background-subtracted ROI read-out
estimates.

Per study folder: ``renogram.dcm`` (DICOM NM), ``parenchyma.png`` (0/1, the label of every fused frame: the kidneys
do not move), ``kidneys.png`` (0 background, 1 left, 2 right parenchyma) and ``truth.json`` (split function,
curve parameters, frame timing).
"""

from __future__ import annotations

import json
import os

import numpy as np

from lesionlab.data.nm_dicom import write_nm_dynamic
from lesionlab.utils import atomic_path, atomic_write_text

from .common import prepare_output_folder

__all__ = ["PHASES", "SPLIT_WINDOW_S", "SYNTHETIC_RENOGRAM_README", "synth_renogram_study", "synth_renograms"]

#: the acquisition protocol of the synthetic studies: (frames, seconds per frame)
PHASES = ((60, 1.0), (77, 15.0))
#: uptake window of the split-function ground truth (seconds after the start of acquisition)
SPLIT_WINDOW_S = (60.0, 120.0)
_COUNTS_PER_UNIT_S = 10.0  # expected counts per pixel and second per unit of activity concentration


def _ellipse(shape, centre, axes, angle_deg, warp=None):
    """Boolean ellipse; ``warp(theta)`` scales the radius (a smooth random boundary)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    a = np.deg2rad(angle_deg)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dy * np.cos(a) + dx * np.sin(a)
    v = -dy * np.sin(a) + dx * np.cos(a)
    r = np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2)
    limit = 1.0 if warp is None else warp(np.arctan2(v, u))
    return r <= limit


def _kidney(shape, centre, length, width, angle, medial_sign, rng):
    """(parenchyma, pelvis) masks of one kidney; ``medial_sign`` +1 when the hilum faces increasing columns."""
    k, phase = rng.integers(2, 4), rng.uniform(0, 2 * np.pi)
    amp = rng.uniform(0.03, 0.07)
    whole = _ellipse(shape, centre, (length / 2, width / 2), angle, lambda t: 1 + amp * np.sin(k * t + phase))
    a = np.deg2rad(angle)
    medial = np.array([-np.sin(a), np.cos(a)]) * medial_sign  # the ellipse's minor axis, towards the spine
    notch_c = np.asarray(centre) + medial * width * 0.55
    notch = _ellipse(shape, notch_c, (length * 0.16, width * 0.22), angle)
    pelvis_c = np.asarray(centre) + medial * width * 0.12
    pelvis = _ellipse(shape, pelvis_c, (length * rng.uniform(0.16, 0.24), width * rng.uniform(0.16, 0.24)), angle)
    pelvis &= whole
    parenchyma = whole & ~pelvis & ~notch
    return parenchyma, pelvis


def _ramp(t, t0, tau):
    return 1.0 - np.exp(-np.clip(t - t0, 0, None) / tau)


def _decay(t, t0, tau):
    return np.exp(-np.clip(t - t0, 0, None) / tau)


def _curves(t: np.ndarray, rng: np.random.Generator, split_left: float) -> tuple[dict, dict]:
    """Activity concentration curves (arbitrary units) at times ``t`` and their parameters."""
    t0 = rng.uniform(3, 8)  # bolus arrival
    s = np.clip(t - t0, 0, None)
    first_pass = 1.5 * (s / 8.0) * np.exp(1 - s / 8.0)
    blood = first_pass + (t > t0) * (0.5 * np.exp(-s / 150.0) + 0.2 * np.exp(-s / 1500.0))
    params = {"bolus_s": t0, "split_left": split_left}
    curves = {"blood": blood}
    for side in ("left", "right"):
        tmax = rng.uniform(120, 240)
        washout = rng.uniform(300, 900) if rng.random() > 0.15 else rng.uniform(4000, 8000)  # obstructed
        uptake = rng.uniform(50, 90)
        curves[f"{side}_parenchyma"] = _ramp(t, t0, uptake) * _decay(t, t0 + tmax, washout)
        delay = tmax - rng.uniform(20, 60)
        curves[f"{side}_pelvis"] = 0.8 * _ramp(t, t0 + delay, 120.0) * _decay(t, t0 + delay + 300, washout * 1.2)
        params[side] = {"uptake_tau_s": uptake, "tmax_s": tmax, "washout_tau_s": washout}
    curves["bladder"] = 1.2 * _ramp(t, t0 + 150, 600.0)
    curves["tissue"] = 0.12 * blood + 0.05 * _ramp(t, t0, 300.0)
    curves["liver"] = 0.35 * blood + 0.1 * _ramp(t, t0 + 30, 400.0)
    return curves, params


def synth_renogram_study(size: int = 64, seed: int = 0, pixel_spacing: float = 3.2) -> dict:
    """Build one synthetic study in memory.

    Returns:
        dict with ``frames`` (expected counts with Poisson noise, ``(137, size, size)``), ``frame_start_s``,
        ``frame_duration_s``, ``parenchyma`` (0/1), ``kidneys`` (0/1 left/2 right), ``truth`` (JSON-able dict).
    """
    if size < 32:
        raise ValueError(f"size must be at least 32 pixels, got {size}")
    rng = np.random.default_rng(seed)
    shape = (size, size)
    n = size / 64.0
    durs = np.concatenate([np.full(m, d) for m, d in PHASES])
    starts = np.concatenate([[0.0], np.cumsum(durs)[:-1]])
    mid = starts + durs / 2
    abnormal = rng.random() <= 0.25
    split_left = float(rng.choice([-1, 1]) * rng.uniform(0.1, 0.25) + 0.5 if abnormal else rng.uniform(0.4, 0.6))
    curves, params = _curves(mid, rng, split_left)
    scale = rng.uniform(0.85, 1.15)
    length, width = 26 * n * scale, 13 * n * scale
    row = size * rng.uniform(0.40, 0.46)
    offset = size * rng.uniform(0.15, 0.19)
    left_p, left_pelvis = _kidney(shape, (row, size / 2 - offset), length * rng.uniform(0.92, 1.08), width,
                                  rng.uniform(8, 20), +1, rng)
    right_p, right_pelvis = _kidney(shape, (row + size * rng.uniform(0.02, 0.05), size / 2 + offset),
                                    length * rng.uniform(0.92, 1.08), width, -rng.uniform(8, 20), -1, rng)
    body = _ellipse(shape, (size * 0.55, size / 2), (size * 0.7, size * 0.44), 0)
    organs = {
        "bladder": _ellipse(shape, (size * rng.uniform(0.86, 0.92), size / 2), (5 * n, 7 * n), 0),
        "blood": _ellipse(shape, (size * 0.02, size * 0.55), (7 * n, 9 * n), 0),
        "liver": _ellipse(shape, (size * 0.16, size * 0.78), (11 * n, 14 * n), -20) & ~right_p & ~right_pelvis,
        "spleen": _ellipse(shape, (size * 0.18, size * 0.2), (7 * n, 4 * n), 25) & ~left_p & ~left_pelvis,
    }
    # concentration of each kidney so that the left share of parenchymal counts in the window is split_left
    win = (starts >= SPLIT_WINDOW_S[0]) & (starts + durs <= SPLIT_WINDOW_S[1] + 1e-6)
    auc = {s: float(np.sum(curves[f"{s}_parenchyma"][win] * durs[win])) for s in ("left", "right")}
    conc_l = split_left / (left_p.sum() * auc["left"])
    conc_r = (1 - split_left) / (right_p.sum() * auc["right"])
    norm = 2.0 / (conc_l + conc_r)
    conc = {"left": conc_l * norm, "right": conc_r * norm}
    maps = [
        (body.astype(float), curves["tissue"]),
        (organs["liver"] * 1.0, curves["liver"]), (organs["spleen"] * 1.0, 0.6 * curves["liver"]),
        (organs["blood"] * 1.0, curves["blood"]), (organs["bladder"] * 1.0, curves["bladder"]),
        (left_p * conc["left"], curves["left_parenchyma"]), (right_p * conc["right"], curves["right_parenchyma"]),
        (left_p * 0.15 + right_p * 0.15, curves["blood"]),  # renal blood volume
        (left_pelvis * conc["left"], curves["left_pelvis"]), (right_pelvis * conc["right"], curves["right_pelvis"]),
    ]
    from scipy.ndimage import gaussian_filter

    sigma = 0.85 * n  # FWHM about 2 pixels at 64
    expected = np.zeros((len(durs), *shape))
    for image, curve in maps:
        blurred = gaussian_filter(image.astype(float), sigma)
        expected += curve[:, None, None] * blurred[None]
    expected *= _COUNTS_PER_UNIT_S * durs[:, None, None] * rng.uniform(0.8, 1.25)
    frames = rng.poisson(expected).astype(np.float32)
    kidneys = (left_p * 1 + right_p * 2).astype(np.uint8)
    counts = {s: float(np.sum(curves[f"{s}_parenchyma"][win] * durs[win]) * conc[s] * (kidneys == i + 1).sum())
              for i, s in enumerate(("left", "right"))}
    truth = {
        "seed": seed,
        "split_left_percent": 100.0 * counts["left"] / (counts["left"] + counts["right"]),
        "split_window_s": list(SPLIT_WINDOW_S),
        "parenchyma_pixels": {"left": int(left_p.sum()), "right": int(right_p.sum())},
        "parameters": params,
        "phases": [{"n_frames": m, "frame_duration_s": d} for m, d in PHASES],
        "pixel_spacing_mm": [pixel_spacing, pixel_spacing],
    }
    return {"frames": frames, "frame_start_s": starts, "frame_duration_s": durs,
            "parenchyma": (kidneys > 0).astype(np.uint8), "kidneys": kidneys, "truth": truth}


def _write_png(array: np.ndarray, path: str) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(array.astype(np.uint8)).save(tmp, format="PNG")


SYNTHETIC_RENOGRAM_README = """Synthetic paediatric renograms (lesionlab)

Written by `lesionlab synth renogram`: one folder per synthetic study with `renogram.dcm` (DICOM NM multi-frame,
dynamic, posterior view; 60 x 1 s + 77 x 15 s frames), `parenchyma.png` (renal parenchyma mask, 0/1),
`kidneys.png` (1 = left, 2 = right parenchyma) and `truth.json` (split function ground truth and curve parameters).
No person is depicted: the studies are drawn from a parametric phantom (lesionlab.data.synthetic.renogram).
Synthetic data: for tests, demonstrations and pipeline checks only, never for clinical use.
"""


def synth_renograms(out_dir: str, n: int = 20, size: int = 64, seed: int = 0, progress: bool = True) -> list[dict]:
    """Write ``n`` synthetic studies into ``out_dir`` (``study_000`` ...); return their datalist-style records.

    Each record: ``{"subject", "image" (the DICOM file), "label" (parenchyma.png), "kidneys", "truth"}`` with paths
    relative to ``out_dir``.
    """
    from tqdm import tqdm

    out_dir = prepare_output_folder(out_dir, SYNTHETIC_RENOGRAM_README)
    records = []
    for i in tqdm(range(n), desc="synthetic renograms", disable=not progress):
        study = synth_renogram_study(size=size, seed=seed * 100_003 + i)
        name = f"study_{i:03d}"
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        spacing = tuple(study["truth"]["pixel_spacing_mm"])
        write_nm_dynamic(os.path.join(folder, "renogram.dcm"), study["frames"], PHASES, pixel_spacing=spacing,
                         patient_id=f"SYNTH-{seed:03d}-{i:03d}")
        _write_png(study["parenchyma"], os.path.join(folder, "parenchyma.png"))
        _write_png(study["kidneys"], os.path.join(folder, "kidneys.png"))
        atomic_write_text(os.path.join(folder, "truth.json"), json.dumps(study["truth"], indent=2))
        records.append({"subject": name, "image": f"{name}/renogram.dcm", "label": f"{name}/parenchyma.png",
                        "kidneys": f"{name}/kidneys.png", "truth": f"{name}/truth.json"})
    return records
