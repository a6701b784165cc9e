"""Readers for the nuclei data sets of seed 001: CoNIC (``.npy`` arrays) and MoNuSAC (images + XML polygons).

CoNIC (Graham et al., Lizard, ICCV 2021; CoNIC challenge 2022): ``images.npy`` ``(N, 256, 256, 3)`` uint8 and
``labels.npy`` ``(N, 256, 256, 2)`` integer (channel 0 instance id, channel 1 class id: 0 background, 1 neutrophil,
2 epithelial, 3 lymphocyte, 4 plasma, 5 eosinophil, 6 connective), read memory-mapped one patch at a time;
optional ``patch_info.csv`` (one line per patch, ``<source image>-<patch>``) names the source image of each patch for
grouped splits.

MoNuSAC (Verma et al., IEEE TMI 2021): one folder per patient holding ``<name>.tif`` (or ``.svs``) images and
``<name>.xml`` Aperio ImageScope annotations whose ``Annotation/Attributes/Attribute@Name`` is the cell class and
whose ``Region/Vertices/Vertex@X,Y`` are polygon vertices in pixels. Classes: 0 background, 1 epithelial,
2 lymphocyte, 3 neutrophil, 4 macrophage (MoNuSAC's own numbering); ``Ambiguous`` regions (test set) stay background.
Images are resized to 512 x 512 (bilinear) and class masks with nearest neighbour (the thesis: "uniformly scaled").

Arrays are returned in MONAI's image orientation ``(C, W, H)`` (first spatial axis = image x), the orientation
MONAI's ``LoadImage`` gives PNG/TIFF tiles, so a model trained on these readers and run on tiles sees the same
layout. Every problem is a :class:`~lesionlab.errors.DataError` naming the file and the item.
"""

from __future__ import annotations

import csv
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from lesionlab.errors import DataError

__all__ = [
    "CONIC_CLASSES",
    "MONUSAC_CLASSES",
    "open_conic",
    "conic_items",
    "read_conic_patch",
    "find_monusac",
    "read_monusac_image",
    "rasterize_monusac_xml",
    "read_monusac_item",
    "read_nuclei_item",
    "iter_nuclei_labels",
    "NucleiDataset",
]

CONIC_CLASSES = ("background", "neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")
MONUSAC_CLASSES = ("background", "epithelial", "lymphocyte", "neutrophil", "macrophage")
#: MoNuSAC annotation names (lower case) -> class id; ``ambiguous`` regions are left as background
MONUSAC_NAME_TO_ID = {"epithelial": 1, "lymphocyte": 2, "neutrophil": 3, "macrophage": 4, "ambiguous": 0}


# ---------------------------------------------------------------- CoNIC


def _load_npy(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(path, "file not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(path, f"not a readable .npy array ({str(err).splitlines()[0]})") from None


def open_conic(root: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map ``images.npy`` and ``labels.npy`` of a CoNIC folder and check their headers.

    Raises:
        DataError: a file is missing or unreadable, or has the wrong dtype, rank, channel count or patch count.
    """
    root = os.fspath(root)
    ip, lp = os.path.join(root, "images.npy"), os.path.join(root, "labels.npy")
    images, labels = _load_npy(ip), _load_npy(lp)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(ip, f"expected uint8 (N, H, W, 3) RGB patches, got {images.dtype} {images.shape}")
    if labels.dtype.kind not in "iu" or labels.ndim != 4 or labels.shape[-1] != 2:
        raise DataError(lp, f"expected integer (N, H, W, 2) instance + class maps, got {labels.dtype} {labels.shape}")
    if labels.shape[:3] != images.shape[:3]:
        raise DataError(lp, f"shape {labels.shape[:3]} does not match images.npy {images.shape[:3]}")
    return images, labels


def _conic_groups(root: str, n: int) -> list[str] | None:
    path = os.path.join(root, "patch_info.csv")
    if not os.path.isfile(path):
        return None
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    if rows and not rows[0][0].split("-")[-1].isdigit():
        rows = rows[1:]  # header line
    if len(rows) != n:
        raise DataError(path, f"{len(rows)} patch lines for {n} patches")
    return [r[0].rsplit("-", 1)[0] for r in rows]


def conic_items(root: str | os.PathLike, group_by_source: bool = False) -> list[dict[str, Any]]:
    """One datalist item per CoNIC patch: ``{"format": "conic", "image", "label", "index"[, "subject"]}``.

    ``group_by_source`` adds the source image (from ``patch_info.csv``) as ``"subject"`` so that a split keeps all
    patches of one slide on one side.
    """
    root = os.path.abspath(os.fspath(root))
    images, _ = open_conic(root)
    groups = _conic_groups(root, images.shape[0]) if group_by_source else None
    if group_by_source and groups is None:
        raise DataError(os.path.join(root, "patch_info.csv"), "needed for group_by_source but not found")
    items = []
    for i in range(images.shape[0]):
        item = {"format": "conic", "image": os.path.join(root, "images.npy"),
                "label": os.path.join(root, "labels.npy"), "index": i}
        if groups is not None:
            item["subject"] = groups[i]
        items.append(item)
    return items


def read_conic_patch(root: str | os.PathLike, index: int, arrays: tuple | None = None) -> tuple[np.ndarray, ...]:
    """Patch ``index``: image ``(3, W, H)`` uint8, class map ``(1, W, H)`` uint8 and instance map ``(1, W, H)`` int32.

    Raises:
        DataError: index out of range or class ids outside 0-6 (names ``labels.npy`` and the item).
    """
    images, labels = arrays if arrays is not None else open_conic(root)
    lp = os.path.join(os.fspath(root), "labels.npy")
    if not 0 <= index < images.shape[0]:
        raise DataError(lp, f"item {index}: out of range for {images.shape[0]} patches")
    lab = np.asarray(labels[index])
    cls = lab[..., 1]
    if cls.min() < 0 or cls.max() >= len(CONIC_CLASSES):
        raise DataError(lp, f"item {index}: class ids must be 0-{len(CONIC_CLASSES) - 1}, found "
                            f"{sorted(set(np.unique(cls).tolist()))[:10]}")
    if lab[..., 0].min() < 0:
        raise DataError(lp, f"item {index}: negative instance ids")
    img = np.asarray(images[index]).transpose(2, 1, 0)
    return img, cls.T[None].astype(np.uint8), lab[..., 0].T[None].astype(np.int32)


# ---------------------------------------------------------------- MoNuSAC


def find_monusac(root: str | os.PathLike) -> list[dict[str, Any]]:
    """Items ``{"format": "monusac", "image", "annotation", "subject"}`` of a MoNuSAC folder (one folder per patient).

    ``.tif`` is preferred over ``.svs`` when both exist. Raises ``DataError`` if an image has no XML or nothing is
    found.
    """
    root = os.path.abspath(os.fspath(root))
    if not os.path.isdir(root):
        raise DataError(root, "MoNuSAC folder not found")
    items = []
    for patient in sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))):
        folder = os.path.join(root, patient)
        stems = sorted({os.path.splitext(f)[0] for f in os.listdir(folder) if f.lower().endswith((".tif", ".tiff",
                                                                                                   ".svs"))})
        for stem in stems:
            cands = [stem + e for e in (".tif", ".tiff", ".svs") if os.path.isfile(os.path.join(folder, stem + e))]
            xml = os.path.join(folder, stem + ".xml")
            if not os.path.isfile(xml):
                raise DataError(os.path.join(folder, cands[0]), "no matching .xml annotation file")
            items.append({"format": "monusac", "image": os.path.join(folder, cands[0]), "annotation": xml,
                          "subject": patient})
    if not items:
        raise DataError(root, "no patient folders with .tif/.svs images and .xml annotations")
    return items


def read_monusac_image(path: str) -> np.ndarray:
    """RGB ``(H, W, 3)`` uint8 from a ``.tif`` (tifffile) or ``.svs`` (OpenSlide, level 0)."""
    try:
        if path.lower().endswith(".svs"):
            import openslide

            slide = openslide.OpenSlide(path)
            img = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
        else:
            import tifffile

            img = tifffile.imread(path)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader failure is a data problem of this file
        raise DataError(path, f"unreadable image ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                        ) from None
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 2:
        raise DataError(path, f"expected an RGB image (H, W, 3), got shape {img.shape}")
    if img.dtype != np.uint8:
        if img.dtype.kind not in "iu" or img.max() > 255 or img.min() < 0:
            raise DataError(path, f"expected 8-bit RGB, got dtype {img.dtype}")
        img = img.astype(np.uint8)
    return img


def rasterize_monusac_xml(path: str, shape: tuple[int, int]) -> np.ndarray:
    """Class mask ``(H, W)`` uint8 of an ImageScope XML; later regions overwrite earlier ones where they overlap.

    Raises:
        DataError: unparsable XML, an unknown class name, or a broken polygon (fewer than 3 vertices, missing or
            non-finite coordinates), naming the annotation and region ids.
    """
    from skimage.draw import polygon as draw_polygon

    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as err:
        raise DataError(path, f"not readable XML ({err})") from None
    mask = np.zeros(shape, np.uint8)
    for a_i, ann in enumerate(tree.getroot().iter("Annotation")):
        aid = ann.get("Id", str(a_i + 1))
        attr = ann.find("Attributes/Attribute")
        name = (attr.get("Name") if attr is not None else None) or ""
        cls = MONUSAC_NAME_TO_ID.get(name.strip().lower())
        if cls is None:
            raise DataError(path, f"annotation {aid}: unknown class name {name!r}; expected one of "
                                  f"{sorted(MONUSAC_NAME_TO_ID)}")
        for r_i, region in enumerate(ann.iter("Region")):
            rid = region.get("Id", str(r_i + 1))
            xs, ys = [], []
            for v in region.iter("Vertex"):
                try:
                    xs.append(float(v.get("X")))
                    ys.append(float(v.get("Y")))
                except (TypeError, ValueError):
                    raise DataError(path, f"annotation {aid} region {rid}: vertex without numeric X/Y") from None
            if len(xs) < 3 or not np.all(np.isfinite(xs + ys)):
                raise DataError(path, f"annotation {aid} region {rid}: broken polygon ({len(xs)} vertices; needs >= 3 "
                                      "finite ones)")
            rr, cc = draw_polygon(np.asarray(ys), np.asarray(xs), shape=shape)
            mask[rr, cc] = cls
    return mask


def _resize(img: np.ndarray, size: int, order: int) -> np.ndarray:
    from skimage.transform import resize

    out = resize(img, (size, size) + img.shape[2:], order=order, preserve_range=True, anti_aliasing=order > 0)
    return out.round().astype(img.dtype) if order == 0 or img.dtype == np.uint8 else out


def read_monusac_item(item: dict[str, Any], size: int | None = 512) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(3, W, H)`` uint8 and class map ``(1, W, H)`` uint8 of a MoNuSAC item, resized to ``size`` squared."""
    img = read_monusac_image(item["image"])
    mask = rasterize_monusac_xml(item["annotation"], img.shape[:2])
    if size is not None:
        img, mask = _resize(img, size, 1), _resize(mask, size, 0)
    return img.transpose(2, 1, 0), mask.T[None]


# ---------------------------------------------------------------- both


def read_nuclei_item(item: dict[str, Any], monusac_size: int | None = 512) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(3, W, H)`` uint8 and class map ``(1, W, H)`` uint8 of a CoNIC or MoNuSAC datalist item."""
    fmt = item.get("format")
    if fmt == "conic":
        img, cls, _ = read_conic_patch(os.path.dirname(item["label"]), int(item["index"]))
        return img, cls
    if fmt == "monusac":
        return read_monusac_item(item, monusac_size)
    raise DataError(item.get("image"), f"unknown nuclei item format {fmt!r} (conic or monusac)")


def iter_nuclei_labels(items: Sequence[dict[str, Any]], monusac_size: int | None = 512):
    """Class maps of ``items`` one at a time (for :func:`lesionlab.pipelines.class_weights.pixel_counts`)."""
    for item in items:
        yield read_nuclei_item(item, monusac_size)[1]


class NucleiDataset(Dataset):
    """Map-style dataset of CoNIC/MoNuSAC items: ``{"image": float32 (3, W, H) in [0, 1], "label": (1, W, H)}``.

    Args:
        data: datalist items (:func:`conic_items`, :func:`find_monusac`).
        transform: callable applied to each sample dict (e.g. a MONAI ``Compose``).
        binary: merge all nucleus classes into foreground 1 (Eq. 3.1, for the stage-B model).
        monusac_size: MoNuSAC resize target (None keeps the native size).
    """

    def __init__(
        self, data: Sequence[dict[str, Any]], transform: Callable | None = None, binary: bool = False,
        monusac_size: int | None = 512,
    ) -> None:
        self.data = list(data)
        self.transform = transform
        self.binary = binary
        self.monusac_size = monusac_size

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.data[i]
        img, cls = read_nuclei_item(item, self.monusac_size)
        if self.binary:
            cls = (cls > 0).astype(np.uint8)
        name = f"{os.path.splitext(os.path.basename(item['image']))[0]}_{item.get('index', i)}"
        sample = {"image": img.astype(np.float32) / 255.0, "label": cls.astype(np.int64), "name": name}
        return self.transform(sample) if self.transform is not None else sample
