"""Engine glue for classification bundles: turn decollated outputs into what Ignite's classification metrics expect."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["class_scores_and_indices", "copy_asset_folder", "image_meta"]


def class_scores_and_indices(pred_key: str = "prob", label_key: str = "label") -> Callable[[Any], tuple]:
    """An ``output_transform`` giving ``(scores (N, C), class indices (N,))`` from a list of output dicts.

    Ignite's ``Accuracy`` treats a one-hot label of the same shape as the prediction as *binary* data and scores the
    N x C entries one by one (four classes: 75 % for predicting nothing); class indices make it multiclass.
    Labels may be indices (0-d or 1-element tensors) or one-hot vectors.
    """

    def transform(output: Sequence[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.stack([torch.as_tensor(o[pred_key]).flatten().float() for o in output])
        labels = []
        for o in output:
            y = torch.as_tensor(o[label_key]).flatten()
            labels.append(y.argmax() if y.numel() > 1 else y[0].long())
        return scores, torch.stack(labels).to(scores.device)

    return transform


def image_meta(batch: Sequence[dict], key: str = "image") -> list[dict]:
    """A saver's ``batch_transform``: the metadata of each decollated item's image (file name for the CSV row)."""
    return [item[key].meta for item in batch]


def copy_asset_folder(src: str, ckpt_dir: str, name: str, enabled: bool = True) -> str | None:
    """Copy a folder trained with the model (e.g. the stain targets) next to the checkpoints as ``ckpt_dir/name``.

    ``lesionlab export`` ships every such folder with the weights. Returns the destination, or None when disabled.
    """
    if not enabled:
        return None
    dst = os.path.join(ckpt_dir, name)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst
