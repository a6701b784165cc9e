"""Run an exported model the way a deployment site would: without lesionlab (``verify``'s runtime check).

:func:`lesionlab.apps.deploy.verify.verify_bundle` runs this file in a fresh, isolated interpreter
(``python -I standalone_check.py ARGS``; ``-I`` keeps the current directory, ``PYTHONPATH`` and user site-packages
off ``sys.path``) after blocking every import of ``lesionlab`` and of a bundle's ``scripts`` package, so a model that
only works with lesionlab installed fails here. It uses nothing but the standard library, NumPy, PyTorch and ONNX
(Runtime), and must keep it that way: it is executed as a script, not imported from the package.

``ARGS`` is one JSON object: ``x`` (``.npy`` input batch), ``ts`` / ``onnx`` (model files or null) and ``ts_out`` /
``onnx_out`` (where to save the outputs). The last stdout line is ``RESULT {json}`` with per-runtime ``ok``, output
``shape``, the ONNX input/output names, the TorchScript's embedded metadata version, errors, and
``lesionlab_imported``.
"""
from __future__ import annotations

import importlib.abc
import json
import sys

BLOCKED = {"lesionlab", "scripts"}


class BlockImports(importlib.abc.MetaPathFinder):
    """Refuse to import the packages in :data:`BLOCKED`."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: a deployed model must run without it")
        return None


def run_torchscript(args: dict, x) -> dict:
    """Load and run ``args["ts"]``; save its output to ``args["ts_out"]``."""
    import numpy as np
    import torch

    try:
        extra = {"metadata.json": ""}
        m = torch.jit.load(args["ts"], map_location="cpu", _extra_files=extra)
        m.eval()
        with torch.no_grad():
            y = m(torch.from_numpy(x))
        np.save(args["ts_out"], y.detach().numpy())
        meta = json.loads(extra["metadata.json"]) if extra["metadata.json"] else {}
        return {"ok": True, "shape": list(y.shape), "metadata_version": meta.get("version")}
    except Exception as e:  # noqa: BLE001 - the failure is the check's result
        return {"ok": False, "error": f"{type(e).__name__}: {e}"[:800]}


def run_onnx(args: dict, x) -> dict:
    """Check and run ``args["onnx"]`` with ONNX Runtime on the CPU; save its output to ``args["onnx_out"]``."""
    import numpy as np

    res: dict = {}
    try:
        import onnx
        import onnxruntime as ort

        onnx.checker.check_model(onnx.load(args["onnx"]))
        s = ort.InferenceSession(args["onnx"], providers=["CPUExecutionProvider"])
        ins, outs = [i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()]
        res = {"inputs": ins, "outputs": outs, "input_shape": [str(d) for d in s.get_inputs()[0].shape]}
        y = s.run([outs[0]], {ins[0]: x})[0]
        np.save(args["onnx_out"], y)
        res.update(ok=True, shape=list(y.shape))
    except Exception as e:  # noqa: BLE001 - the failure is the check's result
        res.update(ok=False, error=f"{type(e).__name__}: {e}"[:800])
    return res


def main(argv: list) -> dict:
    """Block lesionlab, run the requested runtimes on the saved input and return the result."""
    sys.meta_path.insert(0, BlockImports())
    import numpy as np

    args = json.loads(argv[0])
    x = np.load(args["x"])
    res = {}
    if args.get("ts"):
        res["ts"] = run_torchscript(args, x)
    if args.get("onnx"):
        res["onnx"] = run_onnx(args, x)
    res["lesionlab_imported"] = any(k.split(".")[0] == "lesionlab" for k in sys.modules)
    return res


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(sys.argv[1:])))
