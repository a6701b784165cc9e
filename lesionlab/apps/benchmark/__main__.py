"""``python -m lesionlab.apps.benchmark``: the same as ``lesionlab bench`` and ``python bench/run.py``."""

from __future__ import annotations

import sys

from lesionlab.apps.benchmark.runner import main

if __name__ == "__main__":
    sys.exit(main())
