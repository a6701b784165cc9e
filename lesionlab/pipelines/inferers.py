"""Inferers: whole-volume inference for 2.5D slice networks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

from lesionlab.transforms.array import DEFAULT_OFFSETS, stack_slices

__all__ = ["Slice25DInferer"]


class Slice25DInferer(Inferer):
    """Run a 2.5D slice network over every slice of a volume and return the volume of its outputs.

    For each slice ``i`` of ``inputs`` ``(B, C, H, W, D)`` the stack of slices ``i + offsets`` (zeros outside the
    volume) is built on the fly, in batches of ``sw_batch_size`` slices, and passed to ``network`` as
    ``(n, C*K, H, W)``. The outputs are written into one preallocated ``(B, out_channels, H, W, D)`` volume on
    ``device``; apart from that volume only one batch of stacks is alive at a time, so memory does not grow with
    the number of slices. Geometry (MetaTensor metadata and applied operations) is copied from ``inputs`` so that
    ``Invertd`` can map the result back to the original grid.

    Args:
        offsets: slice offsets of the stack. Defaults to ``(-2, -1, 0, 1)`` (the thesis's ``[i-2, i-1, i, i+1]``).
        sw_batch_size: slices per network call. Defaults to 16.
        activation: ``None`` (return logits), ``"sigmoid"`` or ``"softmax"`` (return probabilities).
        device: device of the output volume; defaults to the device of ``inputs``.
        progress: show a progress bar over the slice batches.
    """

    def __init__(
        self,
        offsets: Sequence[int] = DEFAULT_OFFSETS,
        sw_batch_size: int = 16,
        activation: str | None = None,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.offsets = tuple(int(o) for o in offsets)
        if not self.offsets:
            raise ValueError("offsets must name at least one slice offset.")
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}.")
        if activation not in (None, "sigmoid", "softmax"):
            raise ValueError(f"activation must be None, 'sigmoid' or 'softmax', got {activation!r}.")
        self.sw_batch_size, self.activation = sw_batch_size, activation
        self.device = None if device is None else torch.device(device)
        self.progress = progress

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs``: (B, C, H, W, D); returns (B, out_channels, H, W, D) logits or probabilities."""
        if inputs.ndim != 5:
            raise ValueError(f"Slice25DInferer expects a batch of volumes (B, C, H, W, D), got {tuple(inputs.shape)}.")
        b, depth = inputs.shape[0], inputs.shape[-1]
        vol = inputs.as_tensor() if hasattr(inputs, "as_tensor") else inputs
        out_device = self.device or vol.device
        output: torch.Tensor | None = None
        starts = range(0, depth, self.sw_batch_size)
        if self.progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="slices", unit="batch", leave=False)
        for start in starts:
            idx = torch.arange(start, min(depth, start + self.sw_batch_size), device=vol.device)
            stacks = stack_slices(vol, idx, self.offsets)  # (B, n, C*K, H, W)
            n = stacks.shape[1]
            logits = network(stacks.reshape(b * n, *stacks.shape[2:]), *args, **kwargs)
            if isinstance(logits, (tuple, list)):  # deep-supervision networks in train mode: first is the main output
                logits = logits[0]
            if self.activation == "sigmoid":
                logits = torch.sigmoid(logits)
            elif self.activation == "softmax":
                logits = torch.softmax(logits, dim=1)
            logits = logits.reshape(b, n, *logits.shape[1:]).to(out_device)
            if output is None:
                output = torch.zeros((b, logits.shape[2], *logits.shape[3:], depth), dtype=logits.dtype,
                                     device=out_device)
            output[..., start : start + n] = logits.permute(0, 2, 3, 4, 1)
        assert output is not None  # depth >= 1
        return convert_to_dst_type(output, inputs, dtype=output.dtype, device=out_device)[0]
