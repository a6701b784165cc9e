"""Pictures and numbers the app shows: overlays with a legend, class areas, volumes, Grad-CAM, downloads.

Pure NumPy/Pillow/Matplotlib functions (no Streamlit), so they are tested on their own. Arrays are in display order:
``(H, W)`` / ``(H, W, 3)`` for 2D, ``(Z, Y, X)`` for volumes. :func:`display_order` turns MONAI's array order
(x, y[, z]; Pillow images are read transposed by MONAI's ``PILReader``) into it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

__all__ = ["display_order", "display_order_channels", "input_rgb",
           "class_colors", "overlay", "class_areas", "count_objects", "volume_rgb", "cam_overlay",
           "legend_html", "png_bytes", "nifti_bytes", "grad_cam", "thumbnail"]


def display_order(a: np.ndarray) -> np.ndarray:
    """MONAI order (x, y) or (x, y, z) -> display order (rows, columns) or (z, y, x)."""
    return np.ascontiguousarray(a.T)


def display_order_channels(image) -> np.ndarray:
    """A channel-first network input in MONAI order -> ``(H, W, C)`` in display order."""
    a = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
    return np.ascontiguousarray(np.moveaxis(a, 0, -1).swapaxes(0, 1))


def input_rgb(hwc: np.ndarray) -> np.ndarray:
    """An ``(H, W, C)`` network input as RGB uint8 for display: 3 channels as colour, else the first as grey; each
    channel stretched to its 0.5-99.5 percentiles."""
    a = hwc[..., :3] if hwc.shape[-1] >= 3 else np.repeat(hwc[..., :1], 3, axis=-1)
    lo = np.percentile(a, 0.5, axis=(0, 1))
    hi = np.percentile(a, 99.5, axis=(0, 1))
    return (np.clip((a - lo) / np.maximum(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def class_colors(metadata: Mapping, class_names: Mapping[int, str]) -> dict[int, tuple[int, int, int]]:
    """RGB colour (0-255) of every foreground class: the bundle's segment colours (as in its Slicer/SEG output)."""
    from lesionlab.data.io import segments_from_metadata

    seg = {s.label_value: s.color for s in segments_from_metadata(metadata)}
    out = {}
    for i, k in enumerate(k for k in class_names if k != 0):
        rgb = seg.get(k) or seg.get(list(seg)[i % len(seg)]) if seg else (0.9, 0.2, 0.2)
        out[k] = tuple(int(round(255 * c)) for c in rgb)
    return out


def overlay(rgb: np.ndarray, label: np.ndarray, colors: Mapping[int, tuple[int, int, int]],
            alpha: float = 0.45) -> np.ndarray:
    """``rgb`` (uint8, H x W x 3) with every class of ``label`` blended in its colour and its outline drawn opaque."""
    from scipy import ndimage

    out = rgb.astype(np.float32).copy()
    for k, color in colors.items():
        mask = label == k
        if not mask.any():
            continue
        c = np.asarray(color, np.float32)
        out[mask] = (1 - alpha) * out[mask] + alpha * c
        edge = mask & ~ndimage.binary_erosion(mask)
        out[edge] = c
    return np.clip(out, 0, 255).astype(np.uint8)


def class_areas(label: np.ndarray, class_names: Mapping[int, str], unit_area: float | None = None,
                unit: str = "mL") -> list[dict]:
    """Pixels (voxels), share of the image and, with ``unit_area`` (mm^2 or mm^3 per pixel), area or volume per class.

    Volumes are reported in mL (mm^3 / 1000), areas in mm^2.
    """
    total = label.size
    rows = []
    for k, name in class_names.items():
        n = int(np.count_nonzero(label == k))
        row = {"class": name, "pixels": n, "share_%": round(100.0 * n / total, 3) if total else 0.0}
        if unit_area is not None:
            row[unit] = round(n * unit_area / (1000.0 if unit == "mL" else 1.0), 3)
        rows.append(row)
    return rows


def count_objects(label: np.ndarray, classes: Mapping[int, str], min_pixels: int = 1) -> dict[str, int]:
    """Connected components (8-/26-connected) of each class with at least ``min_pixels`` pixels."""
    from scipy import ndimage

    out = {}
    for k, name in classes.items():
        comp, n = ndimage.label(label == k, structure=np.ones((3,) * label.ndim))
        if n and min_pixels > 1:
            sizes = np.bincount(comp.ravel())[1:]
            n = int((sizes >= min_pixels).sum())
        out[name] = int(n)
    return out


def volume_rgb(volume: np.ndarray, z: int, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Slice ``z`` of a ``(Z, Y, X)`` volume as grey RGB uint8 (window ``lo``..``hi``, default 0.5-99.5 percentiles)."""
    if lo is None or hi is None:
        lo, hi = (float(v) for v in np.percentile(volume, (0.5, 99.5)))
    s = np.clip((volume[z] - lo) / max(hi - lo, 1e-6), 0, 1)
    g = (s * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def cam_overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A Grad-CAM map (H x W, any range) as a 'jet' heat map over ``rgb``."""
    from matplotlib import colormaps

    c = cam.astype(np.float32)
    c = (c - c.min()) / max(float(c.max() - c.min()), 1e-8)
    heat = colormaps["jet"](c)[..., :3] * 255
    return np.clip((1 - alpha) * rgb.astype(np.float32) + alpha * heat, 0, 255).astype(np.uint8)


def legend_html(colors: Mapping[int, tuple[int, int, int]], class_names: Mapping[int, str]) -> str:
    """A one-line HTML legend: a coloured square and the name of every class."""
    items = [f"<span style='display:inline-block;width:0.9em;height:0.9em;background:rgb{tuple(c)};"
             f"margin:0 0.3em 0 0.8em;vertical-align:middle'></span>{class_names.get(k, k)}"
             for k, c in colors.items()]
    return "<div class='lesionlab-legend'>" + "".join(items) + "</div>"


def png_bytes(a: np.ndarray) -> bytes:
    """PNG file bytes of a uint8 image or label map (labels are written as their values)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(a).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def nifti_bytes(label_zyx: np.ndarray, spacing: tuple[float, ...] | None = None, affine: np.ndarray | None = None
                ) -> bytes:
    """A ``.nii.gz`` of a label map given in display order (2D or ``(Z, Y, X)``), uint8."""
    import gzip

    import nibabel as nib

    data = np.asarray(label_zyx).T.astype(np.uint8)  # back to x, y(, z)
    if affine is None:
        sp = list(spacing or (1.0,) * data.ndim) + [1.0] * (3 - data.ndim)
        affine = np.diag([*sp[:3], 1.0])
    img = nib.Nifti1Image(data, affine)
    return gzip.compress(img.to_bytes(), compresslevel=6)


def thumbnail(rgb: np.ndarray, max_side: int = 1024) -> tuple[np.ndarray, int]:
    """A down-sampled copy (by an integer step) of an image too large to show whole, and the step."""
    step = max(1, int(np.ceil(max(rgb.shape[:2]) / max_side)))
    return rgb[::step, ::step], step


def grad_cam(network, image, class_idx: int) -> np.ndarray:
    """Grad-CAM (MONAI ``GradCAM``) of ``class_idx`` on the last convolution of ``network``, input grid, MONAI order.

    Args:
        network: the bundle's network (eval mode, weights loaded).
        image: the preprocessed input, channel first (no batch axis).
        class_idx: class whose evidence is shown.

    Raises:
        ValueError: the network has no convolution layer.
    """
    import torch
    from monai.visualize import GradCAM

    convs = [name for name, m in network.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    if not convs:
        raise ValueError("the network has no convolution layer for Grad-CAM")
    device = next(network.parameters()).device
    x = torch.as_tensor(image).float()[None].to(device)
    cam = GradCAM(nn_module=network, target_layers=convs[-1])
    with torch.enable_grad():
        out = cam(x=x, class_idx=class_idx)
    return np.asarray(out[0, 0].detach().cpu())
