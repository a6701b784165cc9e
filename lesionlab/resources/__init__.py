"""Files shipped with the package: the MONAI bundle metadata schema used for offline validation.

``meta_schema_20240725.json`` is an unmodified copy of the public MONAI bundle metadata schema that bundle
``metadata.json`` files name in their ``schema`` field; keeping a copy lets bundles be verified without network.
"""

from __future__ import annotations

import os

__all__ = ["META_SCHEMA_PATH"]

META_SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "meta_schema_20240725.json")
