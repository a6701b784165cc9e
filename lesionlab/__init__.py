"""lesionlab: MONAI-based lesion segmentation and classification from five published methods.

Importing the package has no side effects; sub-packages are imported explicitly
(``lesionlab.networks``, ``lesionlab.transforms``, ``lesionlab.pipelines``, ``lesionlab.data``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import DataError, LesionlabError

__all__ = ["__version__", "LesionlabError", "DataError"]
