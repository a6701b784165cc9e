"""Same-class mixup (seed 004 §2.4): blend a training sample with another of its class; the label stays that class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable
from torch.utils.data import Dataset

__all__ = ["SameClassMixupDataset"]


class SameClassMixupDataset(Dataset, Randomizable):
    """Wrap a dataset of ``{"image", "label", ...}`` items; with probability ``prob`` an item's image becomes
    ``lam * image + (1 - lam) * image_j`` with ``j`` drawn from the same class and ``lam ~ Beta(alpha, alpha)``.

    The paper mixes "glomeruli randomly drawn from the same category" offline before splitting (§2.4, §9.8); here it
    runs at load time on the training part only, so no mixed copy of a test glomerulus can reach training. The
    mixing partner goes through the wrapped dataset's own (random) transforms. Labels are read from
    ``dataset.data`` (MONAI datasets) or ``labels``.

    Args:
        dataset: the wrapped training dataset (items are dicts with ``image_key`` and ``label_key``).
        prob: probability of mixing an item. Defaults to 0.5.
        alpha: Beta(alpha, alpha) parameter of the mixing weight (not given in the paper). Defaults to 0.4.
        labels: class of every item when ``dataset`` has no ``data`` list.
        image_key, label_key: item keys. Defaults to ``"image"``, ``"label"``.
        seed: random seed. Defaults to 0.
    """

    def __init__(
        self, dataset: Any, prob: float = 0.5, alpha: float = 0.4, labels: Sequence[int] | None = None,
        image_key: str = "image", label_key: str = "label", seed: int = 0,
    ) -> None:
        if not 0.0 <= prob <= 1.0 or alpha <= 0:
            raise ValueError(f"need 0 <= prob <= 1 and alpha > 0, got {prob}, {alpha}.")
        self.dataset, self.prob, self.alpha = dataset, prob, alpha
        self.image_key, self.label_key = image_key, label_key
        if labels is None:
            labels = [int(np.asarray(d[label_key]).ravel()[0]) for d in dataset.data]
        if len(labels) != len(dataset):
            raise ValueError(f"{len(labels)} labels for {len(dataset)} items.")
        self.by_class: dict[int, list[int]] = {}
        for i, c in enumerate(labels):
            self.by_class.setdefault(int(c), []).append(i)
        self.labels = [int(c) for c in labels]
        self.set_random_state(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def randomize(self, data: Any = None) -> None:
        pass

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        peers = self.by_class[self.labels[index]]
        if self.R.rand() >= self.prob or len(peers) < 2:
            return item
        other = self.dataset[int(peers[self.R.randint(len(peers))])]
        lam = float(self.R.beta(self.alpha, self.alpha))
        item = dict(item)
        a, b = item[self.image_key], other[self.image_key]
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"cannot mix images of shapes {tuple(a.shape)} and {tuple(b.shape)}; resize first.")
        item[self.image_key] = lam * a + (1.0 - lam) * torch.as_tensor(b).to(a) if torch.is_tensor(a) else (
            lam * a + (1.0 - lam) * np.asarray(b)
        )
        return item
