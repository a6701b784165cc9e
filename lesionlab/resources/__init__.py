"""Files shipped with the package: the bundle metadata schema (offline validation) and the MNI152 template.

``meta_schema_20240725.json`` is an unmodified copy of the public MONAI bundle metadata schema that bundle
``metadata.json`` files name in their ``schema`` field; keeping a copy lets bundles be verified without network.

``mni152_t1_2mm.nii.gz`` is the 2 mm MNI ICBM152 2009a T1 template (from nilearn, uint8) used as the fixed image of
the registration to MNI152 space (:mod:`lesionlab.transforms.registration`); its copyright notice is in
``NOTICE_MNI152.txt`` and goes with every copy (bundles carry one in ``resources/``).
"""

from __future__ import annotations

import os

__all__ = ["META_SCHEMA_PATH", "MNI152_TEMPLATE_PATH", "MNI152_NOTICE_PATH"]

META_SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "meta_schema_20240725.json")
MNI152_TEMPLATE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mni152_t1_2mm.nii.gz")
MNI152_NOTICE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "NOTICE_MNI152.txt")
