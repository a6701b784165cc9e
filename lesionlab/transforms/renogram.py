"""Renogram preparation of seed 003 §2.2 as array transforms and their dictionary twins.

A study travels as a ``MetaTensor`` of shape ``(frames, rows, columns)`` (frames on the channel axis) whose meta
data carries the timing: ``frame_start_s`` and ``frame_duration_s`` (lists, seconds), set by
:class:`LoadRenogram` from :func:`lesionlab.data.renogram.read_renogram`. The paper's steps map to:

1. drop the first minute (the tracer has not reached the kidneys yet) → :class:`DropEarlyFrames`, by acquisition
   time (frames starting before ``seconds`` go), not by frame count;
2. fuse every 7 consecutive frames in temporal order → :class:`FuseFrames` (``"sum"`` by default; ``"mean"`` and
   ``"max"`` options: the paper does not name the operator); an incomplete last group is dropped (77 frames after
   the first minute give the paper's 11 fused images);
3. the labelled fused image(s) ("the 2nd and 3rd image of each group") → :class:`SelectFrames` (0-based indices, so
   the paper's 2nd and 3rd are 1 and 2);
4. pseudo-colour to 3 channels → :class:`PseudoColour`. Colormap ``"jet"`` (default): the intensity ``v`` is
   scaled to [0, 1] by the image's maximum (or a percentile) and mapped to
   ``R = clip(1.5 - |4v - 3|), G = clip(1.5 - |4v - 2|), B = clip(1.5 - |4v - 1|)`` (the classic piecewise-linear
   jet, close to OpenCV's ``COLORMAP_JET``, which the paper probably used); ``"gray"`` repeats the scaled image;
5. 384 x 384: MONAI's ``Resized`` (invertible, so predictions go back onto the study grid; nothing is cropped).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from lesionlab.data.renogram import read_renogram
from lesionlab.errors import DataError

__all__ = [
    "FUSION_MODES", "COLORMAPS", "LoadRenogram", "DropEarlyFrames", "FuseFrames", "SelectFrames", "PseudoColour",
    "LoadRenogramd", "DropEarlyFramesd", "FuseFramesd", "SelectFramesd", "PseudoColourd", "jet",
]

FUSION_MODES = ("sum", "mean", "max")
COLORMAPS = ("jet", "gray")


def _timing(img: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    meta = getattr(img, "meta", {}) or {}
    if "frame_start_s" not in meta or "frame_duration_s" not in meta:
        raise ValueError("renogram frames need 'frame_start_s' and 'frame_duration_s' in their meta data "
                         "(a MetaTensor from LoadRenogram)")
    start, dur = np.asarray(meta["frame_start_s"], float), np.asarray(meta["frame_duration_s"], float)
    if start.shape != (img.shape[0],) or dur.shape != (img.shape[0],):
        raise ValueError(f"timing of {start.size} frames for a stack of {img.shape[0]} frames")
    return start, dur


def _with_timing(data: torch.Tensor, like: torch.Tensor, start: Sequence[float], dur: Sequence[float]) -> MetaTensor:
    meta = dict(getattr(like, "meta", {}) or {})
    meta["frame_start_s"], meta["frame_duration_s"] = [float(v) for v in start], [float(v) for v in dur]
    out = MetaTensor(data, meta=meta)
    if isinstance(like, MetaTensor):
        out.affine = like.affine
    return out


def _plain(img: torch.Tensor) -> torch.Tensor:
    return img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)


def _source(img: torch.Tensor) -> str:
    return str((getattr(img, "meta", {}) or {}).get("filename_or_obj", "renogram"))


class LoadRenogram(Transform):
    """Read a renogram (DICOM NM, folder of DICOM frames, .npz or TIFF/PNG stack) into a ``(frames, rows, columns)``
    ``MetaTensor`` with its timing in the meta data (see :func:`lesionlab.data.renogram.read_renogram`).

    Args:
        detector, energy_window, frame_seconds: passed to :func:`~lesionlab.data.renogram.read_renogram`.
    """

    def __init__(self, detector: int | None = None, energy_window: int = 1,
                 frame_seconds: float | Sequence[float] | None = None) -> None:
        self.detector, self.energy_window, self.frame_seconds = detector, energy_window, frame_seconds

    def __call__(self, path: str) -> MetaTensor:
        study = read_renogram(path, self.detector, self.energy_window, self.frame_seconds)
        out = MetaTensor(torch.as_tensor(study.frames, dtype=torch.float32), meta=study.meta())
        out.affine = torch.diag(torch.tensor([*study.pixel_spacing, 1.0], dtype=torch.float64))
        return out


class DropEarlyFrames(Transform):
    """Drop the frames that start before ``seconds`` after the start of acquisition (seed 003: the first minute).

    Args:
        seconds: time in seconds; frames with ``frame_start_s < seconds`` are removed. Defaults to 60.
    """

    def __init__(self, seconds: float = 60.0) -> None:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self.seconds = float(seconds)

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        start, dur = _timing(img)
        keep = start >= self.seconds - 1e-6
        if not keep.any():
            raise DataError(_source(img), f"no frame starts {self.seconds:g} s or later (the acquisition lasts "
                                          f"{start[-1] + dur[-1]:.0f} s); not a full renogram")
        idx = torch.as_tensor(np.flatnonzero(keep))
        return _with_timing(_plain(img)[idx], img, start[keep], dur[keep])


class FuseFrames(Transform):
    """Fuse every ``group`` consecutive frames into one image (seed 003: 7 frames, temporal order).

    A fused image starts with its first frame and lasts the sum of the group's durations. Frames left over at the
    end (fewer than ``group``) are dropped (``drop_incomplete=True``, the paper's count of 11 fused images from 77
    frames) or fused as a shorter last image.

    Args:
        group: frames per fused image. Defaults to 7.
        mode: ``"sum"`` (counts add up; default), ``"mean"`` or ``"max"``.
        drop_incomplete: drop an incomplete last group. Defaults to True.
    """

    def __init__(self, group: int = 7, mode: str = "sum", drop_incomplete: bool = True) -> None:
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        if mode not in FUSION_MODES:
            raise ValueError(f"mode must be one of {FUSION_MODES}, got {mode!r}")
        self.group, self.mode, self.drop_incomplete = int(group), mode, drop_incomplete

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        start, dur = _timing(img)
        n = img.shape[0]
        last = n - self.group + 1 if self.drop_incomplete else n
        bounds = list(range(0, max(last, 0), self.group))
        if not bounds:
            raise DataError(_source(img), f"{n} frame(s) left, fewer than one group of {self.group}")
        x = _plain(img).float()
        reduce = {"sum": lambda t: t.sum(0), "mean": lambda t: t.mean(0), "max": lambda t: t.amax(0)}[self.mode]
        fused = torch.stack([reduce(x[b: b + self.group]) for b in bounds])
        return _with_timing(fused, img, [start[b] for b in bounds], [dur[b: b + self.group].sum() for b in bounds])


class SelectFrames(Transform):
    """Keep the (fused) frames at ``indices`` (0-based; negative counts from the end).

    The kept frames' timing stays in the meta data and the ``filename_or_obj`` gains a ``_fused<k>`` suffix before
    its extension, so that outputs of different frames of one study get different names; ``source_file`` keeps the
    original path.

    Args:
        indices: one index or a sequence of indices.
    """

    def __init__(self, indices: int | Sequence[int] = (1,)) -> None:
        self.indices = [int(indices)] if np.ndim(indices) == 0 else [int(i) for i in indices]
        if not self.indices:
            raise ValueError("indices must not be empty")

    def __call__(self, img: torch.Tensor, indices: int | Sequence[int] | None = None) -> MetaTensor:
        chosen = self.indices if indices is None else ([int(indices)] if np.ndim(indices) == 0 else list(indices))
        start, dur = _timing(img)
        n = img.shape[0]
        bad = [i for i in chosen if not -n <= i < n]
        if bad:
            raise DataError(_source(img), f"fused frame(s) {bad} requested but the study has {n} fused frame(s)")
        out = _with_timing(_plain(img)[chosen], img, start[chosen], dur[chosen])
        src = _source(img)
        stem, ext = (src[: -len(".dcm")], ".dcm") if src.lower().endswith(".dcm") else (src, "")
        out.meta["source_file"] = out.meta.get("source_file", src)
        out.meta["filename_or_obj"] = f"{stem}_fused{'-'.join(str(i % n) for i in chosen)}{ext}"
        return out


def jet(v: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear jet colormap of values in [0, 1]: ``(...,) -> (3, ...)`` (R, G, B in [0, 1])."""
    v = v.clamp(0, 1)
    return torch.stack([(1.5 - (4 * v - c).abs()).clamp(0, 1) for c in (3.0, 2.0, 1.0)])


class PseudoColour(Transform):
    """Pseudo-colour a single-channel image ``(1, H, W)`` into ``(3, H, W)`` in [0, 1].

    The image is scaled by ``v = x / q`` where ``q`` is its ``percentile``-th percentile (100: the maximum),
    clipped to [0, 1], then mapped by ``colormap`` (see the module docstring).

    Args:
        colormap: ``"jet"`` (default) or ``"gray"``.
        percentile: scaling percentile in (0, 100]. Defaults to 100.
    """

    def __init__(self, colormap: str = "jet", percentile: float = 100.0) -> None:
        if colormap not in COLORMAPS:
            raise ValueError(f"colormap must be one of {COLORMAPS}, got {colormap!r}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], got {percentile}")
        self.colormap, self.percentile = colormap, float(percentile)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim != 3 or img.shape[0] != 1:
            raise ValueError(f"PseudoColour expects one channel (1, H, W), got shape {tuple(img.shape)}; select one "
                             "fused frame first")
        x = _plain(img).float()[0].clamp_min(0)
        q = torch.quantile(x.flatten(), self.percentile / 100.0) if self.percentile < 100 else x.max()
        v = x / q if q > 0 else torch.zeros_like(x)
        rgb = jet(v) if self.colormap == "jet" else v.clamp(0, 1)[None].repeat(3, 1, 1)
        if isinstance(img, MetaTensor):
            out = MetaTensor(rgb, meta=dict(img.meta))
            out.affine = img.affine
            return out
        return rgb


class _Twin(MapTransform):
    """Dictionary twin: apply ``self.op`` to every key."""

    op: Transform

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.op(d[key])
        return d


class LoadRenogramd(_Twin):
    """Dictionary version of :class:`LoadRenogram` (the key holds the path)."""

    def __init__(self, keys: KeysCollection, detector: int | None = None, energy_window: int = 1,
                 frame_seconds: float | Sequence[float] | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = LoadRenogram(detector, energy_window, frame_seconds)


class DropEarlyFramesd(_Twin):
    """Dictionary version of :class:`DropEarlyFrames`."""

    def __init__(self, keys: KeysCollection, seconds: float = 60.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = DropEarlyFrames(seconds)


class FuseFramesd(_Twin):
    """Dictionary version of :class:`FuseFrames`."""

    def __init__(self, keys: KeysCollection, group: int = 7, mode: str = "sum", drop_incomplete: bool = True,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = FuseFrames(group, mode, drop_incomplete)


class SelectFramesd(_Twin):
    """Dictionary version of :class:`SelectFrames`; with ``index_key`` the indices come from the data dict (e.g. a
    datalist's ``"frame"`` entry), otherwise from ``indices``."""

    def __init__(self, keys: KeysCollection, indices: int | Sequence[int] = (1,), index_key: str | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op, self.index_key = SelectFrames(indices), index_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        chosen = None
        if self.index_key is not None:
            if self.index_key not in d:
                raise KeyError(f"SelectFramesd: the data has no {self.index_key!r} entry (fused frame index)")
            chosen = np.asarray(d[self.index_key]).astype(int).tolist()
        for key in self.key_iterator(d):
            d[key] = self.op(d[key], chosen)
        return d


class PseudoColourd(_Twin):
    """Dictionary version of :class:`PseudoColour`."""

    def __init__(self, keys: KeysCollection, colormap: str = "jet", percentile: float = 100.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.op = PseudoColour(colormap, percentile)
