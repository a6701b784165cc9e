"""Stain (colour) normalisation of stained histology images: Macenko and Vahadane, fitted on a target image.

Both methods model a stained RGB image in optical density (Beer-Lambert), ``OD = -ln(I / 255) = C W``, with ``W``
the ``r x 3`` stain matrix (one unit-norm OD colour per stain, r = 2: haematoxylin-like first) and ``C`` the
per-pixel stain concentrations. They differ in how ``W`` is estimated:

- Macenko et al., ISBI 2009 (https://doi.org/10.1109/ISBI.2009.5193250): the plane of the two largest principal
  directions of the tissue OD, and the extreme angles (``alpha`` / ``100 - alpha`` percentiles) of the pixels in it.
- Vahadane et al., IEEE TMI 35(8), 2016 (https://doi.org/10.1109/TMI.2016.2529665), seed 004 eq. 9: sparse
  non-negative matrix factorisation ``min 1/2 ||V - WH||_F^2 + lambda sum_j ||H(j,:)||_1, W, H >= 0`` of the tissue
  OD: alternating exact sparse non-negative codes and projected block-coordinate stain updates (unit-norm stain
  vectors, as in the paper). scikit-learn's ``DictionaryLearning`` solves the same problem but took over four
  minutes on one 512 x 512 tile here (a Python loop of per-pixel lasso fits); the closed-form two-stain code below
  takes well under a second.

Normalisation (both): concentrations of the source by exact non-negative least squares on its own ``W``, each stain
rescaled so its 99th percentile matches the target's, re-coloured with the target's ``W``:
``I_norm = 255 exp(-C_src (maxC_tgt / maxC_src) W_tgt)``. Seed 004 §2.5 fits one target per stain type (HE, PAS):
:class:`StainNormalized` takes one target per stain and reads the stain of each item from a field.

Why not torchstain: its Macenko does not fix the sign of the principal directions before taking angles (so the
angle percentiles can wrap around +-pi), truncates instead of rounding, and has no Vahadane; the few lines below
keep the two methods on one code path.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping

import numpy as np
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_data_type, convert_to_dst_type

from lesionlab.errors import DataError

__all__ = [
    "ValidateRGB",
    "ValidateRGBd",
    "StainNormalizer",
    "StainNormalize",
    "StainNormalized",
    "rgb_to_od",
    "od_to_rgb",
    "stain_concentrations",
    "macenko_stain_matrix",
    "vahadane_stain_matrix",
    "stain_angle_degrees",
]

METHODS = ("macenko", "vahadane")


def rgb_to_od(rgb: np.ndarray) -> np.ndarray:
    """Optical density ``-ln(I / 255)`` of RGB values in [0, 255] (``I`` clipped to >= 1 so OD is finite)."""
    return -np.log(np.clip(np.asarray(rgb, dtype=np.float64), 1.0, 255.0) / 255.0)


def od_to_rgb(od: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_od`: ``255 exp(-OD)``, clipped to [0, 255] (float64)."""
    return np.clip(255.0 * np.exp(-np.asarray(od, dtype=np.float64)), 0.0, 255.0)


def _tissue_od(rgb_pixels: np.ndarray, beta: float) -> np.ndarray:
    """OD of the pixels whose OD is >= ``beta`` in every channel (drops white background, as Macenko)."""
    od = rgb_to_od(rgb_pixels)
    tissue = od[np.all(od >= beta, axis=1)]
    if len(tissue) < 10:
        raise ValueError(f"only {len(tissue)} stained pixels (OD >= {beta} in every channel): no tissue to fit on.")
    return tissue


def _order_and_normalise(w: np.ndarray) -> np.ndarray:
    """Unit rows, haematoxylin-like (larger red OD) first."""
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    return w[np.argsort(-w[:, 0])]


def macenko_stain_matrix(od: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Macenko stain matrix ``(2, 3)`` of tissue OD pixels ``(N, 3)``."""
    _, vecs = np.linalg.eigh(np.cov(od, rowvar=False))
    plane = vecs[:, [2, 1]]
    # eigenvectors have an arbitrary sign: point both into the positive OD octant so that the tissue sits around
    # angle 0 in the plane and the percentiles below never wrap around +-pi
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)
    proj = od @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, alpha), np.percentile(phi, 100 - alpha)
    w = np.stack([plane @ np.array([np.cos(a), np.sin(a)]) for a in (lo, hi)])
    return _order_and_normalise(np.clip(w, 1e-6, None))


def vahadane_stain_matrix(
    od: np.ndarray, lambda_: float = 0.1, max_pixels: int = 20000, iterations: int = 60, seed: int = 0
) -> np.ndarray:
    """Vahadane stain matrix ``(2, 3)``: sparse NMF (seed 004 eq. 9) of up to ``max_pixels`` tissue OD pixels.

    Alternating minimisation as in dictionary learning (Mairal et al., JMLR 2010, which Vahadane et al. use through
    SPAMS): the sparse non-negative codes are solved exactly per pixel (:func:`stain_concentrations` with
    ``lambda_``), then each stain vector is updated by block-coordinate descent and projected onto the
    non-negative unit sphere. Initialised from the Macenko estimate (deterministic, already in the right octant).
    """
    rng = np.random.default_rng(seed)
    if len(od) > max_pixels:
        od = od[rng.choice(len(od), max_pixels, replace=False)]
    w = macenko_stain_matrix(od)
    for _ in range(iterations):
        c = stain_concentrations(od, w, lambda_)
        for k in range(2):
            ck = c[:, k]
            norm = float(ck @ ck)
            if norm < 1e-12:
                continue
            residual = od - c @ w
            wk = np.clip(w[k] + residual.T @ ck / norm, 0.0, None)
            length = np.linalg.norm(wk)
            if length > 1e-12:
                w[k] = wk / length
    if np.any(np.linalg.norm(w, axis=1) < 1e-8):
        raise ValueError("sparse NMF found fewer than 2 stains (a stain vector is zero); is the image stained twice?")
    return _order_and_normalise(w)


def stain_concentrations(od: np.ndarray, w: np.ndarray, lambda_: float = 0.0) -> np.ndarray:
    """Exact ``min_{C >= 0} 1/2 ||OD - C W||^2 + lambda_ sum(C)`` for two stains, vectorised over pixels.

    With ``lambda_ = 0`` this is non-negative least squares; with ``lambda_ > 0`` the L1-penalised (sparse) code of
    seed 004 eq. 9 (on non-negative codes the L1 norm is the sum). The optimum is either the stationary point of the
    quadratic, when it is non-negative, or lies on a face (one stain or none): every candidate is evaluated.

    Args:
        od: ``(N, 3)`` optical densities.
        w: ``(2, 3)`` stain matrix.
        lambda_: L1 weight. Defaults to 0.

    Returns:
        ``(N, 2)`` concentrations.
    """
    if w.shape[0] != 2:
        raise ValueError(f"two stains expected, got a stain matrix of shape {w.shape}.")
    n = len(od)
    gram = w @ w.T
    proj = od @ w.T - lambda_  # (N, 2)
    both = np.linalg.solve(gram, proj.T).T
    single = np.clip(proj / np.diag(gram), 0.0, None)
    zeros = np.zeros(n)
    candidates = np.stack(
        [
            np.where(np.all(both >= 0, axis=1, keepdims=True), both, 0.0),
            np.stack([single[:, 0], zeros], 1),
            np.stack([zeros, single[:, 1]], 1),
        ]
    )
    scores = 0.5 * np.sum((od[None] - candidates @ w) ** 2, axis=2) + lambda_ * candidates.sum(axis=2)
    return candidates[np.argmin(scores, axis=0), np.arange(n)]


def stain_angle_degrees(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """Angle in degrees between corresponding rows (stain vectors) of two stain matrices."""
    cos = np.sum(w1 * w2, axis=1) / (np.linalg.norm(w1, axis=1) * np.linalg.norm(w2, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _load_rgb(target: str | os.PathLike | np.ndarray) -> np.ndarray:
    """Channel-last RGB float array from a file path or a channel-first ``(3, ...)`` array."""
    if isinstance(target, (str, os.PathLike)):
        from PIL import Image

        with Image.open(target) as im:
            return np.asarray(im.convert("RGB"), dtype=np.float64)
    arr = np.asarray(convert_data_type(target, np.ndarray)[0], dtype=np.float64)
    if arr.ndim < 2 or arr.shape[0] != 3:
        raise ValueError(f"target image must be channel-first RGB (3, ...), got shape {arr.shape}.")
    return np.moveaxis(arr, 0, -1)


class StainNormalizer:
    """Fit a stain model on a target image and move other images onto its stain colours (see the module docstring).

    Args:
        method: ``"macenko"`` or ``"vahadane"``.
        lambda_: L1 weight of Vahadane's sparse NMF (seed 004 eq. 9; not given in the paper, 0.1 as in the common
            implementations). Defaults to 0.1.
        alpha: Macenko's angle percentile. Defaults to 1.
        beta: OD threshold below which a pixel counts as background. Defaults to 0.15.
        max_pixels: pixels sampled for the sparse NMF. Defaults to 20000.
        seed: seed of that sampling and of the NMF initialisation. Defaults to 0.
    """

    def __init__(
        self, method: str = "vahadane", lambda_: float = 0.1, alpha: float = 1.0, beta: float = 0.15,
        max_pixels: int = 20000, seed: int = 0,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
        if lambda_ < 0 or not 0 <= alpha < 50 or beta < 0:
            raise ValueError(f"need lambda_ >= 0, 0 <= alpha < 50, beta >= 0; got {lambda_}, {alpha}, {beta}.")
        self.method, self.lambda_, self.alpha, self.beta = method, lambda_, alpha, beta
        self.max_pixels, self.seed = max_pixels, seed
        self.stain_matrix: np.ndarray | None = None
        self.max_concentrations: np.ndarray | None = None

    def estimate(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stain matrix ``(2, 3)`` and 99th-percentile tissue concentrations ``(2,)`` of a channel-last RGB image."""
        tissue = _tissue_od(np.reshape(rgb, (-1, 3)), self.beta)
        if self.method == "macenko":
            w = macenko_stain_matrix(tissue, self.alpha)
        else:
            w = vahadane_stain_matrix(tissue, self.lambda_, self.max_pixels, self.seed)
        max_c = np.percentile(stain_concentrations(tissue, w), 99, axis=0)
        return w, np.maximum(max_c, 1e-6)

    def fit(self, target: str | os.PathLike | np.ndarray) -> StainNormalizer:
        """Fit on the target (a file path, or channel-first RGB in [0, 255])."""
        self.stain_matrix, self.max_concentrations = self.estimate(_load_rgb(target))
        return self

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """Channel-last RGB in [0, 255] -> the same pixels in the target's stain colours (float64, [0, 255])."""
        if self.stain_matrix is None or self.max_concentrations is None:
            raise RuntimeError("StainNormalizer.normalize called before fit().")
        w, max_c = self.estimate(rgb)
        c = stain_concentrations(rgb_to_od(np.reshape(rgb, (-1, 3))), w) * (self.max_concentrations / max_c)
        return od_to_rgb(c @ self.stain_matrix).reshape(np.shape(rgb))


class StainNormalize(Transform):
    """Array transform: channel-first RGB ``(3, H, W)`` in [0, 255] -> float32 in the target's stain colours.

    Fits the stain model on ``target`` once at construction (seed 004 §2.5: one target image per stain type).

    Args:
        target: target image: a file path (PNG, JPEG, TIFF) or a channel-first RGB array in [0, 255].
        method: ``"vahadane"`` (the paper) or ``"macenko"``. Defaults to ``"vahadane"``.
        lambda_, alpha, beta, max_pixels, seed: see :class:`StainNormalizer`.
    """

    def __init__(
        self, target: str | os.PathLike | np.ndarray, method: str = "vahadane", lambda_: float = 0.1,
        alpha: float = 1.0, beta: float = 0.15, max_pixels: int = 20000, seed: int = 0,
    ) -> None:
        self.normalizer = StainNormalizer(method, lambda_, alpha, beta, max_pixels, seed).fit(target)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        arr = np.asarray(convert_data_type(img, np.ndarray)[0], dtype=np.float64)
        if arr.ndim < 2 or arr.shape[0] != 3:
            raise ValueError(f"StainNormalize expects channel-first RGB (3, ...), got shape {arr.shape}.")
        out = np.moveaxis(self.normalizer.normalize(np.moveaxis(arr, 0, -1)), -1, 0).astype(np.float32)
        return convert_to_dst_type(out, img, dtype=np.float32)[0]


class StainNormalized(MapTransform):
    """Dictionary twin of :class:`StainNormalize`, with one target per stain type (seed 004: HE and PAS apart).

    Args:
        keys: image keys to normalise.
        targets: one target for every item (path or array), or a mapping ``{stain name: target}``; then each item's
            stain is read from ``stain_key`` and an unknown stain raises ``ValueError`` naming it.
        stain_key: item field holding the stain name when ``targets`` is a mapping. Defaults to ``"stain"``.
        method, lambda_, alpha, beta, max_pixels, seed: see :class:`StainNormalizer`.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self, keys: KeysCollection, targets: str | os.PathLike | np.ndarray | Mapping[str, str | np.ndarray],
        stain_key: str = "stain", method: str = "vahadane", lambda_: float = 0.1, alpha: float = 1.0,
        beta: float = 0.15, max_pixels: int = 20000, seed: int = 0, allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.stain_key = stain_key
        args = {"method": method, "lambda_": lambda_, "alpha": alpha, "beta": beta, "max_pixels": max_pixels,
                "seed": seed}
        self.per_stain = isinstance(targets, Mapping)
        items = targets.items() if isinstance(targets, Mapping) else [("*", targets)]
        self.normalizers = {str(name): StainNormalize(t, **args) for name, t in items}

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        stain = str(d.get(self.stain_key, "")) if self.per_stain else "*"
        if stain not in self.normalizers:
            raise ValueError(
                f"no stain-normalisation target for stain {stain!r} (field {self.stain_key!r}); "
                f"targets exist for {sorted(self.normalizers)}."
            )
        for key in self.key_iterator(d):
            d[key] = self.normalizers[stain](d[key])
        return d


def _source_name(img: NdarrayOrTensor) -> str | None:
    meta = getattr(img, "meta", None) or {}
    name = meta.get("filename_or_obj")
    return None if name is None else str(name)


class ValidateRGB(Transform):
    """Check that a loaded crop is a channel-first RGB image in [0, 255]; refuse anything else clearly.

    An RGBA image whose alpha is fully opaque loses the alpha channel (nothing is lost); transparency, greyscale or
    other channel counts, and values outside [0, 255] raise ``DataError`` naming the file.
    """

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        name = _source_name(img)
        if img.ndim != 3:
            raise DataError(name, f"expected a 2D colour image, got an array of shape {tuple(img.shape)}")
        if img.shape[0] == 4:
            alpha = np.asarray(convert_data_type(img[3], np.ndarray)[0])
            if alpha.min() < 255:
                raise DataError(name, "image has a transparent alpha channel; save the crop as opaque RGB")
            img = img[:3]
        if img.shape[0] != 3:
            raise DataError(name, f"expected an RGB stained crop (3 channels), got {img.shape[0]} channel(s)")
        arr = np.asarray(convert_data_type(img, np.ndarray)[0])
        if arr.size == 0 or arr.min() < 0 or arr.max() > 255 or not np.isfinite(arr).all():
            raise DataError(name, "pixel values must be finite and within [0, 255] (8-bit RGB)")
        return img


class ValidateRGBd(MapTransform):
    """Dictionary twin of :class:`ValidateRGB`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = ValidateRGB()

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key])
        return d
