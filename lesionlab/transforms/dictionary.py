"""Dictionary twins of :mod:`lesionlab.transforms.array`: they loop over keys and call the array transform."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import InvertibleTransform, MapTransform, Randomizable
from monai.utils import ensure_tuple_rep

from .array import (
    DEFAULT_OFFSETS,
    InPlaneCropResize,
    MergeMasks,
    NeighbourSliceStack,
    RandSlice25D,
    RegisterToTemplate,
    ValidateHeader,
    ValidateTileFile,
    ValidateVolume,
    lesion_slices,
    take_slices,
)

__all__ = ["NeighbourSliceStackd", "InPlaneCropResized", "RandSlice25Dd", "Slice25Dd", "MergeMasksd", "ValidateVolumed",
           "RegisterToTemplated", "ValidateHeaderd", "ValidateRGBTiled",
           "ValidateTileFiled"]


class NeighbourSliceStackd(MapTransform):
    """Dictionary version of :class:`NeighbourSliceStack` (whole-volume stacking)."""

    def __init__(self, keys: KeysCollection, offsets: Sequence[int] = DEFAULT_OFFSETS,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.stacker = NeighbourSliceStack(offsets)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.stacker(d[key])
        return d


class InPlaneCropResized(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`InPlaneCropResize`; ``mode`` may differ per key (image/label)."""

    def __init__(
        self,
        keys: KeysCollection,
        roi_start: Sequence[int] = (10, 40),
        roi_end: Sequence[int] = (190, 220),
        spatial_size: Sequence[int] = (192, 192),
        mode: Sequence[str] | str = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        modes = ensure_tuple_rep(mode, len(self.keys))
        self.transforms = {k: InPlaneCropResize(roi_start, roi_end, spatial_size, m) for k, m in zip(self.keys, modes)}

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transforms[key](d[key])
        return d

    def inverse(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transforms[key].inverse(d[key])
        return d


class Slice25Dd(MapTransform):
    """The 2.5D samples of given slices of one volume dict: ``__call__(data, indices)`` returns one dict per index.

    Each output dict holds ``image`` as a ``(C*K, H, W)`` stack (see :class:`NeighbourSliceStack`), ``label`` as the
    ``(1, H, W)`` centre slice and ``slice_index``; other entries are copied. The deterministic twin of
    :class:`RandSlice25Dd`, used by :class:`lesionlab.pipelines.slices.Slice25DDataset` for the thesis's protocol.

    Args:
        image_key: key of the ``(C, H, W, D)`` image volume.
        label_key: key of the ``(1, H, W, D)`` label volume; ``None`` for none.
        offsets: slice offsets of the stack. Defaults to ``(-2, -1, 0, 1)``.
    """

    def __init__(self, image_key: str = "image", label_key: str | None = "label",
                 offsets: Sequence[int] = DEFAULT_OFFSETS) -> None:
        super().__init__([image_key] + ([label_key] if label_key else []))
        self.image_key, self.label_key = image_key, label_key
        self.stacker = NeighbourSliceStack(offsets)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor],  # type: ignore[override]
                 indices: Sequence[int] = ()) -> list[dict[Hashable, NdarrayOrTensor]]:
        label = data.get(self.label_key) if self.label_key else None
        out = []
        for (stack, lab), index in zip(take_slices(self.stacker, data[self.image_key], label, indices), indices):
            item = {k: v for k, v in data.items() if k not in self.keys}
            item[self.image_key] = stack
            if self.label_key and lab is not None:
                item[self.label_key] = lab
            item["slice_index"] = int(index)
            out.append(item)
        return out


class RandSlice25Dd(Randomizable, MapTransform):
    """Dictionary version of :class:`RandSlice25D`: returns a list of ``num_samples`` dicts (see :class:`Slice25Dd`).

    MONAI's data loader flattens the lists, so a batch of ``b`` volumes holds ``b * num_samples`` slices; the
    bundles batch slices instead (:class:`lesionlab.pipelines.slices.Slice25DSampler`).

    Args:
        image_key: key of the ``(C, H, W, D)`` image volume.
        label_key: key of the ``(1, H, W, D)`` label volume (used to find lesion slices); ``None`` for none.
        num_samples, pos_fraction, offsets: see :class:`RandSlice25D`.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str | None = "label",
        num_samples: int = 8,
        pos_fraction: float = 0.5,
        offsets: Sequence[int] = DEFAULT_OFFSETS,
    ) -> None:
        keys = [image_key] + ([label_key] if label_key else [])
        super().__init__(keys)
        self.image_key, self.label_key = image_key, label_key
        self.sampler = RandSlice25D(num_samples, pos_fraction, offsets)
        self.slicer = Slice25Dd(image_key, label_key, offsets)

    def set_random_state(self, seed: int | None = None, state=None) -> RandSlice25Dd:
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state if state is not None else self.R)
        return self

    def randomize(self, data=None) -> None:  # the sampler draws its own indices
        pass

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> list[dict[Hashable, NdarrayOrTensor]]:
        label = data.get(self.label_key) if self.label_key else None
        img = data[self.image_key]
        self.sampler.randomize(img.shape[-1], [] if label is None else lesion_slices(label))
        return self.slicer(data, self.sampler.indices)


class MergeMasksd(MapTransform):
    """Dictionary version of :class:`MergeMasks`."""

    def __init__(self, keys: KeysCollection, threshold: float = 0.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.merger = MergeMasks(threshold)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.merger(d[key])
        return d


class ValidateVolumed(MapTransform):
    """Dictionary version of :class:`~lesionlab.transforms.array.ValidateVolume`.

    Images (``keys``) and labels (``label_keys``) are checked; every label must lie on the grid of the first image
    key present. Data pass through unchanged. In a bundle put it right after ``EnsureChannelFirstd``::

        {"_target_": "lesionlab.transforms.ValidateVolumed", "keys": "image", "label_keys": "label"}

    Args:
        keys: image keys.
        label_keys: label keys (also validated). Defaults to none.
        label_values: allowed label values (``None``: any). Defaults to ``(0, 1)``.
        image_channels: expected channels of each image (``None``: any). Defaults to None.
        tol: affine tolerance (mm) between label and image. Defaults to 1e-3.
        allow_missing_keys: skip absent keys. Defaults to False.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection = (),
        label_values: Sequence[float] | None = (0, 1),
        image_channels: int | None = None,
        tol: float = 1e-3,
        allow_missing_keys: bool = False,
    ) -> None:
        from monai.utils import ensure_tuple

        images, labels = ensure_tuple(keys), ensure_tuple(label_keys)
        super().__init__(tuple(dict.fromkeys((*images, *labels))), allow_missing_keys)
        self.label_keys = set(labels)
        self.image_keys = [k for k in images if k not in self.label_keys]
        self.image_check = ValidateVolume("image", channels=image_channels, tol=tol)
        self.label_check = ValidateVolume("label", label_values=label_values, tol=tol)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        reference = next((d[k] for k in self.image_keys if k in d), None)
        for key in self.key_iterator(d):
            if key in self.label_keys:
                self.label_check(d[key], reference)
            else:
                self.image_check(d[key])
        return d


class RegisterToTemplated(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`RegisterToTemplate`.

    The registration is computed on ``keys[0]`` (the image) and the same map is applied to every key, so a label
    loaded with the image lands on the same model-grid voxels. ``Invertd`` with ``orig_keys`` naming the image
    maps a prediction back to the native grid.

    Args:
        keys: keys to bring onto the model grid; the first one is registered.
        template, grid_shape, grid_affine, space, min_similarity, min_coverage, record_dir, threads: see
            :class:`RegisterToTemplate`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        template: str | None = None,
        grid_shape: Sequence[int] | None = None,
        grid_affine: Sequence[Sequence[float]] | None = None,
        space: str = "auto",
        min_similarity: float = 0.4,
        min_coverage: float = 0.6,
        record_dir: str | None = None,
        threads: int | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.register = RegisterToTemplate(template, grid_shape, grid_affine, space, min_similarity, min_coverage,
                                           record_dir, threads)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        d[keys[0]] = self.register(d[keys[0]])
        for key in keys[1:]:
            d[key] = self.register.apply_recorded(d[key], d[keys[0]])
        return d

    def inverse(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.register.inverse(d[key])
        return d


class ValidateHeaderd(MapTransform):
    """Dictionary version of :class:`ValidateHeader`: checks the files named by ``keys`` before ``LoadImaged``."""

    def __init__(self, keys: KeysCollection, spacing: Sequence[float] | None = None,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = ValidateHeader(spacing)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.check(d[key])
        return d


class ValidateTileFiled(ValidateHeaderd):
    """Dictionary version of :class:`ValidateTileFile`: checks that the tiles named by ``keys`` decode (put it before
    ``LoadImaged``)."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys=allow_missing_keys)
        self.check = ValidateTileFile()


class ValidateRGBTiled(MapTransform):
    """Dictionary version of :class:`~lesionlab.transforms.array.ValidateRGBTile` (put it after
    ``EnsureChannelFirstd``)."""

    def __init__(self, keys: KeysCollection, min_size: int = 16, allow_missing_keys: bool = False) -> None:
        from lesionlab.transforms.array import ValidateRGBTile

        super().__init__(keys, allow_missing_keys)
        self.check = ValidateRGBTile(min_size)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key])
        return d

