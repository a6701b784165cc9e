"""Offline emulation of MONAI Label 0.8.5's ``monaibundle`` inference on one bundle (bundle_conventions.md §11.4).

Usage: ``python monailabel_emulation.py BUNDLE_DIR IMAGE_FILE``; prints one line ``RESULT {json}``.

The steps follow ``monailabel/tasks/infer/bundle.py`` (``BundleInferTask``) and ``basic_infer.py`` of MONAI Label
0.8.5 line by line: a plain ``ConfigParser`` on ``configs/inference.json`` (no metadata, no ``initialize``),
``bundle_root`` set to the bundle path, ``use_click`` set, ``network_def`` instantiated once, the device overridden
with the string ``"cpu"`` (also in the reference resolver), weights from ``models/model.pt`` with ``torch.load`` +
``.get("model", ckpt)`` + ``load_state_dict(strict=False)``, the ``preprocessing`` Compose unpacked with
``LoadImaged.image_only = False``, ``inferer(data["image"][None], network)``, ``postprocessing`` without
``SaveImaged`` and with MONAI Label's ``Restored`` appended. MONAI Label itself is not installed (it pulls a server
stack); ``Restored`` is therefore re-implemented below with the code path its defaults take.

The script imports only MONAI, PyTorch and NumPy at top level, so it runs in the MONAI 1.4.0 environment
(``.venv-monai14``) as well as in the project's MONAI 1.6.1 environment.
"""

from __future__ import annotations

import copy
import json
import os
import sys

import numpy as np
import torch
from monai.bundle import ConfigItem, ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, MapTransform, Resize, SaveImaged


class Restored(MapTransform):
    """MONAI Label 0.8.5 ``monailabel.transform.post.Restored`` as ``BundleInferTask`` uses it.

    Copied (defaults only: ``has_channel=True``, ``invert_orient=False``, nearest mode, no ``config_labels``)
    because MONAI Label is not installed here; resizes ``pred`` to the reference image's original spatial shape and
    drops a single channel, exactly as the original does.
    """

    def __init__(self, keys, ref_image: str, meta_key_postfix: str = "meta_dict") -> None:
        super().__init__(keys)
        self.ref_image = ref_image
        self.meta_key_postfix = meta_key_postfix

    def __call__(self, data):
        d = dict(data)
        ref = d.get(self.ref_image)
        meta_dict = ref.meta if isinstance(ref, MetaTensor) else d.get(f"{self.ref_image}_{self.meta_key_postfix}", {})
        for key in self.keys:
            result = d[key]
            current_size = result.shape[1:]
            spatial_shape = meta_dict.get("spatial_shape", current_size)
            spatial_size = spatial_shape[-len(current_size):]
            if np.any(np.not_equal(current_size, spatial_size)):
                result = Resize(spatial_size=spatial_size, mode="nearest")(result, mode="nearest", align_corners=None)
            d[key] = result if len(result.shape) <= 3 else result[0] if result.shape[0] == 1 else result
            meta = d.get(f"{key}_{self.meta_key_postfix}")
            if meta is None:
                meta = {}
                d[f"{key}_{self.meta_key_postfix}"] = meta
            meta["affine"] = meta_dict.get("original_affine")
        return d


def _infer_type(name: str) -> str:
    name = name.lower()
    for t in ("deepedit", "deepgrow", "detection", "segmentation", "classification"):
        if t in name:
            return t
    return "segmentation"


def main(bundle: str, image_file: str) -> dict:
    import monai

    device = "cpu"
    config = next(c for c in ("inference.json", "inference.yaml") if os.path.exists(f"{bundle}/configs/{c}"))
    sys.path.insert(0, bundle)
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]  # MONAI Label's unload_module("scripts")

    # BundleInferTask.__init__
    parser = ConfigParser()
    parser.read_config(f"{bundle}/configs/{config}")
    parser.config.update({"bundle_root": bundle})
    parser.config["use_click"] = False
    model_path = f"{bundle}/models/model.pt"
    network = parser.get_parsed_content("network_def", instantiate=True) if os.path.exists(model_path) else None
    with open(f"{bundle}/configs/metadata.json") as fp:
        metadata = json.load(fp)
    key_image, image = next(iter(metadata["network_data_format"]["inputs"].items()))
    key_pred, pred = next(iter(metadata["network_data_format"]["outputs"].items()))
    infer_type = _infer_type(os.path.basename(os.path.normpath(bundle)))
    labels = {v.lower(): int(k) for k, v in pred.get("channel_def", {}).items() if v.lower() != "background"}
    spatial_shape = image.get("spatial_shape")
    dimension = len(spatial_shape) if spatial_shape else 3

    def update_device() -> None:  # BundleInferTask._update_device with a device string, as the server passes it
        parser.config.update({"device": device})
        if parser.ref_resolver.items.get("device"):
            parser.ref_resolver.items["device"] = ConfigItem(config=device, id="device")

    # pre_transforms
    update_device()
    c = parser.get_parsed_content("preprocessing", instantiate=True)
    pre = list(c.transforms) if isinstance(c, Compose) else c
    for t in pre:
        if isinstance(t, LoadImaged):
            t._loader.image_only = False
    data = {"image": image_file, "image_path": image_file, "device": device, "model": os.path.basename(bundle)}
    for t in pre:
        data = t(data)
    image_spatial = [int(s) for s in data[key_image].meta.get("spatial_shape", data[key_image].shape[1:])]

    # inferer + _get_network + run_inferer
    update_device()
    inferer = parser.get_parsed_content("inferer", instantiate=True)
    net = copy.deepcopy(network).to(torch.device(device))
    checkpoint = torch.load(model_path, map_location=torch.device(device), weights_only=True)
    state = checkpoint.get("model", checkpoint)
    mismatch = sorted(set(network.state_dict()) ^ set(state))
    net.load_state_dict(state, strict=False)
    net.eval()
    inputs = data[key_image]
    inputs = inputs if torch.is_tensor(inputs) else torch.from_numpy(inputs)
    with torch.no_grad():
        outputs = inferer(inputs[None].to(torch.device(device)), net)
    data[key_pred] = outputs[0]
    raw_shape = list(data[key_pred].shape)

    # post_transforms: SaveImaged removed, Restored appended
    update_device()
    c = parser.get_parsed_content("postprocessing", instantiate=True)
    post = [t for t in (list(c.transforms) if isinstance(c, Compose) else c) if not isinstance(t, SaveImaged)]
    for t in post:
        data = t(data)
    bundle_pred = data[key_pred]
    data = Restored(keys=key_pred, ref_image=key_image)(data)
    final = data[key_pred]
    values = np.unique(np.asarray(final.detach().cpu() if torch.is_tensor(final) else final)).tolist()
    return {
        "monai_version": monai.__version__,
        "torch_version": torch.__version__,
        "key_image": key_image,
        "key_pred": key_pred,
        "labels": labels,
        "dimension": dimension,
        "infer_type": infer_type,
        "checkpoint_key_mismatch": mismatch,
        "image_spatial_shape": image_spatial,
        "network_output_shape": raw_shape,
        "postprocessed_shape": list(bundle_pred.shape),
        "restored_shape": list(final.shape),
        "values": values[:10],
        "post_transforms": [type(t).__name__ for t in post] + ["Restored"],
    }


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]))))
