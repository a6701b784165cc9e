"""Engine-side components consumed by bundle configs: losses, inferers, metrics, handlers, datalists."""

from __future__ import annotations

from lesionlab.pipelines.class_weights import WEIGHT_FUNCTIONS, class_weights

__all__ = ["WEIGHT_FUNCTIONS", "class_weights"]
