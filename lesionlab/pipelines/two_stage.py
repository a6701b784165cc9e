"""Two-stage "background reuse" (seed 001 §5, Eqs. 3.2-3.4): a binary model vetoes the multi-class model's foreground.

A multi-class model ``M_normal`` and a foreground/background model ``M_binary`` are trained independently on the
same images. At inference every pixel whose binary foreground probability is ``<= tau`` (0.5 in the thesis) becomes
background; every other pixel keeps the multi-class arg-max (which may itself be background). The fusion only ever
turns pixels into background.

* :func:`foreground_probability` — the binary model's foreground probability from one sigmoid channel or two
  softmax channels.
* :func:`fuse_background` — the fused label map (Eq. 3.4) from the two outputs.
* :func:`fuse_probabilities` — the same decision as a probability map (multi-class softmax, one-hot background where
  vetoed) whose arg-max is the fused map; what :class:`TwoStageInferer` returns, so a bundle's usual
  ``AsDiscreted(argmax=True)`` post-processing gives Eq. 3.4.
* :class:`TwoStageInferer` — a MONAI inferer that runs both networks (through any base inferer, e.g. sliding
  window) in one call; used by the bundle's two-stage inference config.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from monai.inferers import Inferer, SimpleInferer

__all__ = ["foreground_probability", "fuse_background", "fuse_probabilities", "TwoStageInferer"]


def foreground_probability(binary_output: torch.Tensor, logits: bool = True) -> torch.Tensor:
    """Foreground probability ``(B, 1, *spatial)`` from a binary model's ``(B, 1 | 2, *spatial)`` output.

    One channel: sigmoid of the logit (or the value itself when ``logits`` is False). Two channels: softmax
    channel 1 (or channel 1 itself).
    """
    if binary_output.ndim < 3 or binary_output.shape[1] not in (1, 2):
        raise ValueError(f"binary output must be (B, 1 or 2, *spatial), got {tuple(binary_output.shape)}")
    if binary_output.shape[1] == 1:
        return torch.sigmoid(binary_output) if logits else binary_output
    return (torch.softmax(binary_output, 1) if logits else binary_output)[:, 1:2]


def _check(multi: torch.Tensor, fg: torch.Tensor, tau: float, background_index: int) -> None:
    if multi.ndim != fg.ndim or multi.shape[0] != fg.shape[0] or multi.shape[2:] != fg.shape[2:]:
        raise ValueError(f"multi-class output {tuple(multi.shape)} and binary output {tuple(fg.shape)} differ in "
                         "batch or spatial size")
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must be in [0, 1), got {tau}")
    if not 0 <= background_index < multi.shape[1]:
        raise ValueError(f"background_index {background_index} out of range for {multi.shape[1]} classes")


def fuse_background(
    multi_output: torch.Tensor,
    binary_output: torch.Tensor,
    tau: float = 0.5,
    background_index: int = 0,
    binary_logits: bool = True,
) -> torch.Tensor:
    """Fused class-index map ``(B, 1, *spatial)`` (long): background where ``P(fg) <= tau``, else the arg-max.

    Args:
        multi_output: multi-class logits or probabilities ``(B, C, *spatial)``.
        binary_output: binary model output ``(B, 1 | 2, *spatial)``.
        tau: foreground threshold (the pixel is foreground only when ``P(fg) > tau``).
        background_index: class index written for vetoed pixels.
        binary_logits: whether ``binary_output`` holds logits (else probabilities).
    """
    fg = foreground_probability(binary_output, binary_logits)
    _check(multi_output, fg, tau, background_index)
    multi = multi_output.argmax(1, keepdim=True)
    return torch.where(fg > tau, multi, torch.full_like(multi, background_index))


def fuse_probabilities(
    multi_logits: torch.Tensor,
    binary_output: torch.Tensor,
    tau: float = 0.5,
    background_index: int = 0,
    binary_logits: bool = True,
) -> torch.Tensor:
    """Multi-class softmax ``(B, C, *spatial)`` with vetoed pixels replaced by one-hot background (see module doc)."""
    fg = foreground_probability(binary_output, binary_logits)
    _check(multi_logits, fg, tau, background_index)
    prob = torch.softmax(multi_logits.float(), 1)
    onehot = torch.zeros_like(prob)
    onehot[:, background_index] = 1.0
    return torch.where(fg > tau, prob, onehot)


class TwoStageInferer(Inferer):
    """Runs the multi-class network and ``binary_network`` on the same input and returns the fused probabilities.

    Args:
        binary_network: the foreground/background model (its weights are loaded by the bundle's handlers).
        tau: foreground threshold (thesis: 0.5).
        background_index: background class index.
        inferer: base inferer used for both networks (e.g. ``SlidingWindowInferer`` for large tiles);
            ``SimpleInferer`` by default.
    """

    def __init__(
        self, binary_network: nn.Module, tau: float = 0.5, background_index: int = 0, inferer: Inferer | None = None
    ) -> None:
        super().__init__()
        if not 0.0 <= tau < 1.0:
            raise ValueError(f"tau must be in [0, 1), got {tau}")
        self.binary_network = binary_network
        self.tau = float(tau)
        self.background_index = int(background_index)
        self.inferer = inferer if inferer is not None else SimpleInferer()

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        multi = self.inferer(inputs, network, *args, **kwargs)
        self.binary_network.to(inputs.device).eval()
        binary = self.inferer(inputs, self.binary_network, *args, **kwargs)
        return fuse_probabilities(multi, binary, self.tau, self.background_index)
