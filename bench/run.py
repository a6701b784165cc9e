"""The benchmark suite in one run: conv peak, every network (and its peers) relative to it, end-to-end paths.

Writes ``bench/results.json`` (or ``--out``), the markdown table next to it and PNG plots; see
``lesionlab.apps.benchmark`` for what is measured and how, and ``docs/performance.md`` for a run on the project's
machine. Same as ``lesionlab bench``.

Usage::

    python bench/run.py --quick                      # smoke run, tiny sizes (< 2 min)
    python bench/run.py --threads 2                  # full run (about 15 min on 2 cores)
    python bench/run.py --compile --networks DUNet   # also torch.compile, one network
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lesionlab.apps.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
