"""Fine-tuning helpers: freeze a fraction of a network from the input side (seed 004's 100/75/25/0 % study)."""

from __future__ import annotations

import torch.nn as nn

__all__ = ["freeze_fraction"]


def freeze_fraction(network: nn.Module, fraction: float, head_prefixes: tuple[str, ...] = ("head", "fc",
                    "last_linear", "classifier")) -> nn.Module:
    """Freeze the first ``fraction`` of the backbone's parameter tensors, counted from the input side.

    Seed 004 §3.4/§5 tunes the share of frozen ImageNet weights over {100, 75, 25, 0} % without defining it (§9.2);
    here it is the share of parameter tensors in registration order (stem first), excluding the classifier head
    (parameters whose name starts with one of ``head_prefixes``), which always trains. 1.0 therefore trains only the
    head; 0.0 fine-tunes everything (the paper's best setting). Returns ``network`` for use in configs.

    Raises:
        ValueError: ``fraction`` outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}.")
    backbone = [(n, p) for n, p in network.named_parameters() if not n.startswith(head_prefixes)]
    n_frozen = int(round(fraction * len(backbone)))
    for i, (_, p) in enumerate(backbone):
        p.requires_grad_(i >= n_frozen)
    return network
