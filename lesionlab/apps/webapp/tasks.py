"""What a bundle asks of the web app, read from its ``configs/metadata.json`` only.

:func:`task_spec` turns a bundle's metadata into a :class:`TaskSpec`: which kind of task the app shows (2D image
segmentation, volume segmentation, classification), which uploads it accepts, how many channels the network reads,
the class names and whether the bundle declares whole-slide inference. A bundle added later appears in the app
without a change here, as long as its metadata follows the MONAI bundle schema.

Rules (first match wins), from ``network_data_format``:

* **classification**: the first output's ``format`` is ``classification``/``probabilities``/``logits``, or its
  ``spatial_shape`` is empty; class names from the output ``channel_def``.
* **volume segmentation**: the input ``spatial_shape`` has three entries, or ``data_type`` names a volume reader
  (``nibabel``, ``itk``) -- the 2.5D stroke bundles read whole volumes and slice them themselves, so their 2D
  ``spatial_shape`` does not make them 2D-image bundles.
* **image segmentation**: everything else with ``format: segmentation`` (2D tiles, RGB or grey). When ``data_type``
  names DICOM (a 2D DICOM bundle such as a renogram), uploads are DICOM files passed to the bundle as they are, and
  the picture shown is the bundle's own preprocessed input.

Whole-slide inference is declared by ``"whole_slide": true`` in the input spec or at the top of the metadata, or by
a ``configs/inference_wsi.json`` beside ``inference.json``; the app then accepts slides and runs that config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lesionlab.errors import LesionlabError

__all__ = ["TaskSpec", "task_spec", "IMAGE_TYPES", "VOLUME_TYPES", "SLIDE_TYPES", "DICOM_TYPES", "KIND_TITLES"]

#: upload suffixes per input kind (Streamlit's ``file_uploader(type=...)`` matches the last suffix)
IMAGE_TYPES = ("png", "jpg", "jpeg", "tif", "tiff", "bmp")
VOLUME_TYPES = ("nii", "gz", "nrrd", "mha", "zip")
SLIDE_TYPES = ("svs", "tif", "tiff", "ndpi", "scn")
DICOM_TYPES = ("dcm", "dicom", "ima")
#: how each kind is named in the sidebar
KIND_TITLES = {
    "segmentation-2d": "Image segmentation (2D tiles)",
    "segmentation-3d": "Volume segmentation (NIfTI / DICOM)",
    "classification": "Image classification",
}
_CLASSIFICATION_FORMATS = ("classification", "classes", "class", "probabilities", "logits", "label", "labels")
_VOLUME_DATA_TYPES = ("nibabel", "itk", "nifti")


@dataclass
class TaskSpec:
    """The parts of a bundle's metadata the app needs.

    Attributes:
        kind: ``"segmentation-2d"``, ``"segmentation-3d"`` or ``"classification"``.
        name: bundle display name (``name`` of the metadata, else the folder name).
        task: the metadata's one-line ``task``.
        in_channels: channels the network reads (``inputs.image.num_channels``).
        class_names: ``{class index: name}`` from the output ``channel_def`` (background included for segmentation).
        whole_slide: the bundle declares whole-slide inference.
        version: bundle version.
        extra: other metadata fields shown in the sidebar (``intended_use``, ``description``).
    """

    kind: str
    name: str
    task: str
    in_channels: int
    class_names: dict[int, str]
    whole_slide: bool = False
    dicom_input: bool = False
    version: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return KIND_TITLES[self.kind]

    @property
    def upload_types(self) -> tuple[str, ...]:
        """File suffixes accepted by the single-analysis uploader."""
        if self.kind == "segmentation-3d":
            return VOLUME_TYPES
        if self.dicom_input:
            return DICOM_TYPES
        if self.whole_slide:
            return tuple(dict.fromkeys(IMAGE_TYPES + SLIDE_TYPES))
        return IMAGE_TYPES

    @property
    def foreground(self) -> dict[int, str]:
        """Segmentation classes without the background (index 0 or a class named ``background``)."""
        return {k: v for k, v in self.class_names.items() if k != 0 and v.lower() != "background"}

    @property
    def num_classes(self) -> int:
        """Classes of the label map (segmentation: background included; at least 2)."""
        return max(max(self.class_names, default=0) + 1, 2)


def _channel_def(spec: Mapping[str, Any]) -> dict[int, str]:
    out: dict[int, str] = {}
    for key, name in (spec.get("channel_def") or {}).items():
        if str(key).strip().isdigit():
            out[int(key)] = str(name)
    return dict(sorted(out.items()))


def _first(entries: Mapping[str, Any], preferred: str) -> Mapping[str, Any]:
    if not isinstance(entries, Mapping) or not entries:
        return {}
    spec = entries.get(preferred) or next(iter(entries.values()))
    return spec if isinstance(spec, Mapping) else {}


def task_spec(metadata: Mapping[str, Any], root: str | None = None) -> TaskSpec:
    """Read a :class:`TaskSpec` from bundle metadata (and, for the whole-slide flag, the bundle folder ``root``).

    Raises:
        LesionlabError: when the metadata has no ``network_data_format`` input or output, or names an output format
            the app cannot show.
    """
    fmt = metadata.get("network_data_format") or {}
    inp, out = _first(fmt.get("inputs", {}), "image"), _first(fmt.get("outputs", {}), "pred")
    name = str(metadata.get("name") or (os.path.basename(os.path.normpath(root)) if root else "bundle"))
    if not inp or not out:
        raise LesionlabError(f"{name}: metadata.json has no network_data_format inputs/outputs; the app reads the "
                             "task from them")
    out_format = str(out.get("format", "")).lower()
    out_shape = out.get("spatial_shape")
    classes = _channel_def(out)
    if out_format in _CLASSIFICATION_FORMATS or (out_format != "segmentation" and not out_shape):
        kind = "classification"
        if not classes:
            classes = {i: f"class {i}" for i in range(int(out.get("num_channels", 2)))}
    elif out_format == "segmentation":
        data_type = str(metadata.get("data_type", "")).lower()
        volume = len(inp.get("spatial_shape") or []) == 3 or data_type in _VOLUME_DATA_TYPES
        kind = "segmentation-3d" if volume else "segmentation-2d"
        if not classes:
            n = int(out.get("num_channels", 1))
            classes = {0: "background", **{i: f"class {i}" for i in range(1, max(n, 2))}}
    else:
        raise LesionlabError(f"{name}: output format {out_format!r} is neither a segmentation nor a classification")
    whole_slide = bool(inp.get("whole_slide") or metadata.get("whole_slide")) or bool(
        root and os.path.exists(os.path.join(root, "configs", "inference_wsi.json")))
    return TaskSpec(
        kind=kind, name=name, task=str(metadata.get("task", "")), in_channels=int(inp.get("num_channels", 1)),
        class_names=classes, whole_slide=whole_slide and kind == "segmentation-2d",
        dicom_input=kind == "segmentation-2d" and "dicom" in str(metadata.get("data_type", "")).lower(),
        version=str(metadata.get("version", "")),
        extra={k: str(metadata[k]) for k in ("description", "intended_use") if metadata.get(k)},
    )
