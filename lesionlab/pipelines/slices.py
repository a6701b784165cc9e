"""2.5D training epochs of the stroke bundles: a dataset of slice stacks and the sampler that picks an epoch's slices.

Two training protocols (the bundle config's ``sampling`` id):

- ``"all"`` -- the thesis's protocol (seed 002 §2.2 and §5): every slice of every training volume once per epoch,
  shuffled, in batches of ``batch_size`` = 16. On ATLAS R1.1 (183 training volumes x 189 slices = 34,587 stacks)
  that is 2,162 optimiser updates per epoch.
- ``"sampled"`` -- the fast mode: each epoch draws ``slices_per_volume`` distinct slices from every volume, a fraction
  ``pos_fraction`` of them on lesion slices (:class:`lesionlab.transforms.RandSlice25D`), pooled over the volumes,
  shuffled and batched the same way. With 8 slices per volume an epoch is 8/189 = 4 % of the thesis's epoch.

:class:`Slice25DDataset` holds the (cached) volumes and serves item ``k`` = one ``(volume, slice)`` pair as a
dict (:class:`lesionlab.transforms.Slice25Dd`); :class:`Slice25DSampler` is the ``sampler`` of the torch
``DataLoader``. Like ``shuffle=True`` it draws its seed from torch's generator when an epoch's iterator is created,
so :class:`lesionlab.pipelines.resume.RNGStateHandler` (which reseeds torch at every epoch start) makes an epoch's
slices and order a function of ``(seed, epoch)`` and a resumed run replays them exactly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lesionlab.transforms import DEFAULT_OFFSETS, RandSlice25D, Slice25Dd, lesion_slices

__all__ = ["PROTOCOLS", "Slice25DDataset", "Slice25DSampler", "describe_protocol"]

#: The training protocols of the 2.5D bundles (config id ``sampling``).
PROTOCOLS = ("all", "sampled")


class Slice25DDataset(Dataset):
    """Every slice of a set of volumes as a 2.5D training sample: item ``k`` is one ``(volume, slice)`` pair.

    The volumes (``(C, H, W, D)`` image and ``(1, H, W, D)`` label dicts, normally a MONAI ``CacheDataset`` of the
    deterministic preprocessing with ``copy_cache=False``) are read once at construction to find each volume's
    number of slices and its lesion slices. ``dataset[k]`` returns the dict of :class:`lesionlab.transforms.Slice25Dd`:
    ``image`` ``(C*K, H, W)``, ``label`` ``(1, H, W)``, ``slice_index``, other entries of the volume dict copied.

    Args:
        volumes: indexable volume dicts.
        image_key: key of the image volume. Defaults to ``"image"``.
        label_key: key of the label volume. Defaults to ``"label"``.
        offsets: slice offsets of the stack. Defaults to ``(-2, -1, 0, 1)`` (the thesis's ``[i-2, i-1, i, i+1]``).

    Example::

        volumes = CacheDataset(files, preprocessing, copy_cache=False)
        data = Slice25DDataset(volumes)
        loader = DataLoader(data, batch_size=16, sampler=Slice25DSampler(data, "all"))
    """

    def __init__(self, volumes: Sequence[dict] | Dataset, image_key: str = "image", label_key: str | None = "label",
                 offsets: Sequence[int] = DEFAULT_OFFSETS) -> None:
        self.volumes = volumes
        self.slicer = Slice25Dd(image_key, label_key, offsets)
        self.depths: list[int] = []
        self.positive: list[list[int]] = []
        for v in range(len(volumes)):  # type: ignore[arg-type]
            d = volumes[v]
            self.depths.append(int(d[image_key].shape[-1]))
            label = d.get(label_key) if label_key else None
            self.positive.append([] if label is None else lesion_slices(label))
        if not self.depths:
            raise ValueError("Slice25DDataset needs at least one volume (the training list is empty).")
        self.starts = np.concatenate([[0], np.cumsum(self.depths)]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, k: int) -> tuple[int, int]:
        """``(volume, slice)`` of item ``k``."""
        if not 0 <= k < len(self):
            raise IndexError(f"item {k} is outside the {len(self)} slices of the dataset.")
        v = int(np.searchsorted(self.starts, k, side="right") - 1)
        return v, int(k - self.starts[v])

    def __getitem__(self, k: int) -> dict:
        v, i = self.locate(int(k))
        return self.slicer(self.volumes[v], [i])[0]


class Slice25DSampler(Sampler):
    """The item indices of one training epoch of a :class:`Slice25DDataset`, shuffled (a ``DataLoader`` sampler).

    ``"all"``: a random permutation of every slice of every volume (the thesis's protocol). ``"sampled"``: for each
    volume ``min(slices_per_volume, D)`` distinct slices drawn by :class:`lesionlab.transforms.RandSlice25D`
    (``pos_fraction`` of them on lesion slices), pooled and shuffled. The length is fixed, so an epoch always has
    ``ceil(len / batch_size)`` batches.

    Args:
        dataset: the slice dataset.
        mode: ``"all"`` or ``"sampled"``.
        slices_per_volume: slices per volume and epoch in ``"sampled"`` mode. Defaults to 8.
        pos_fraction: expected fraction of lesion slices in ``"sampled"`` mode. Defaults to 0.5.
        generator: torch generator the epoch seed is drawn from (``None``: torch's default generator, which
            :class:`~lesionlab.pipelines.resume.RNGStateHandler` reseeds per epoch).
    """

    def __init__(self, dataset: Slice25DDataset, mode: str = "all", slices_per_volume: int = 8,
                 pos_fraction: float = 0.5, generator: torch.Generator | None = None) -> None:
        if mode not in PROTOCOLS:
            raise ValueError(f"sampling must be one of {PROTOCOLS}, got {mode!r}.")
        self.dataset, self.mode, self.generator = dataset, mode, generator
        self.chooser = RandSlice25D(num_samples=max(1, int(slices_per_volume)), pos_fraction=pos_fraction)
        if mode == "sampled" and slices_per_volume < 1:
            raise ValueError(f"slices_per_volume must be >= 1, got {slices_per_volume}.")

    def __len__(self) -> int:
        if self.mode == "all":
            return len(self.dataset)
        return sum(min(self.chooser.num_samples, d) for d in self.dataset.depths)

    def __iter__(self) -> Iterator[int]:
        # a generator, like torch's RandomSampler: the seed is drawn at the first ``next``, i.e. after ignite's
        # EPOCH_STARTED handlers (RNGStateHandler's reseed) even for the iterator created before the first epoch
        seed = int(torch.empty((), dtype=torch.int64).random_(generator=self.generator).item()) % (2**32)
        rng = np.random.RandomState(seed)
        if self.mode == "all":
            order = np.arange(len(self.dataset))
        else:
            self.chooser.set_random_state(state=rng)
            picked = []
            for v, (depth, positive) in enumerate(zip(self.dataset.depths, self.dataset.positive)):
                self.chooser.randomize(depth, positive)
                picked.append(self.dataset.starts[v] + np.asarray(self.chooser.indices, dtype=np.int64))
            order = np.concatenate(picked)
        for k in rng.permutation(order):
            yield int(k)


def describe_protocol(config: dict[str, Any], n_volumes: int, n_slices: int | None = None) -> dict[str, Any]:
    """The training protocol of a 2.5D bundle config as numbers: samples and optimiser updates per epoch and in all.

    Args:
        config: the resolved values of ``sampling``, ``slices_per_volume``, ``pos_fraction``, ``batch_size`` and
            ``epochs`` (missing ids take the bundle defaults ``"sampled"``, 8, 0.5, 16, 150).
        n_volumes: training volumes.
        n_slices: slices per volume (depth; 189 for ATLAS R1.1). Defaults to 189.

    Returns:
        ``{"sampling", "epochs", "batch_size", "samples_per_epoch", "updates_per_epoch", "updates", "text"}``.
    """
    depth = 189 if n_slices is None else int(n_slices)
    mode = config.get("sampling", "sampled")
    batch = int(config.get("batch_size", 16))
    epochs = int(config.get("epochs", 150))
    if mode == "all":
        per_epoch = n_volumes * depth
        text = f"every slice of every training volume once per epoch, shuffled, batch {batch}"
    else:
        spv = min(int(config.get("slices_per_volume", 8)), depth)
        per_epoch = n_volumes * spv
        text = (f"{spv} of {depth} slices per volume and epoch ({config.get('pos_fraction', 0.5):g} on lesion slices), "
                f"shuffled, batch {batch}")
    updates = -(-per_epoch // batch)
    return {"sampling": mode, "epochs": epochs, "batch_size": batch, "samples_per_epoch": per_epoch,
            "updates_per_epoch": updates, "updates": updates * epochs, "text": text}
