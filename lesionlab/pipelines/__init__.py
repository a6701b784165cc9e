"""Engine-side components consumed by bundle configs: losses, inferers, metrics, handlers, datalists."""

from __future__ import annotations
