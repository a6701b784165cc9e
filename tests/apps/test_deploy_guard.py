"""The config guard: every project bundle passes; a corpus of bypass attempts is refused, each for a stated reason.

The corpus holds every attempt listed in issue 8 (deny-list misses that ran under ``verify --strict``) and more found
while writing the allow-list. Nothing here is executed: the guard only parses.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from lesionlab.apps.bundle import BUNDLES_DIR
from lesionlab.apps.deploy.guard import check_expression, check_target, scan_bundle, scan_config

#: (name, config fragment, regex the reason must match); every fragment must give at least one finding
BYPASSES = [
    # issue 8, verbatim
    ("optional_import", {"x": "$monai.utils.optional_import('os')[0].system('id')"}, "optional_import|computed"),
    ("torch.serialization.load", {"x": "$torch.serialization.load('/tmp/p.pt')"}, "allow-list"),
    ("model_zoo.load_url", {"x": "$torch.utils.model_zoo.load_url('http://example.invalid/m.pt')"}, "allow-list"),
    ("nested ConfigParser", {"x": "$monai.bundle.ConfigParser({'a': \"$__import__('os').system('id')\"})"
                                  ".get_parsed_content('a')"}, "ConfigParser|computed"),
    ("nested ConfigParser target", {"x": {"_target_": "monai.bundle.ConfigParser",
                                          "config": {"a": "$print(1)"}}}, "not on the allow-list"),
    ("torch.os.system", {"x": "$torch.os.system('id')"}, "torch.os.system"),
    ("os.path.os.system", {"imports": ["$import os"], "x": "$os.path.os.system('id')"}, "os.path.os.system"),
    ("numpy.lib.npyio.load", {"x": "$numpy.lib.npyio.load('a.npy', allow_pickle=True)"}, "numpy.lib.npyio.load"),
    ("dotless exec target", {"x": {"_target_": "exec", "source": "import os"}}, "builtin such as exec"),
    # classic Python escapes
    ("__import__", {"x": "$__import__('os').system('id')"}, "__import__"),
    ("getattr", {"imports": ["$import os"], "x": "$getattr(os, 'system')('id')"}, "getattr"),
    ("eval", {"x": "$eval('1 + 1')"}, "'eval'"),
    ("exec", {"x": "$exec('import os')"}, "'exec'"),
    ("open", {"x": "$open('/etc/passwd').read()"}, "'open'|computed"),
    ("compile", {"x": "$compile('1', 'f', 'eval')"}, "'compile'"),
    ("vars builtins", {"x": "$vars()['__builtins__']"}, "'vars'"),
    ("globals", {"x": "$globals()"}, "'globals'"),
    ("dunder subclasses", {"x": "$().__class__.__bases__[0].__subclasses__()"}, "dunder"),
    ("dunder on reference", {"x": "$@network.__class__.__init__.__globals__"}, "dunder"),
    ("dunder call on reference", {"x": "$@checkpointloader.__call__(@evaluator)"}, "dunder"),
    ("lambda", {"x": "$(lambda: 0)()"}, "Lambda"),
    ("walrus", {"x": "$(f := print)"}, "NamedExpr"),
    ("fullwidth eval (NFKC)", {"x": "$\uff45\uff56\uff41\uff4c('1')"}, "'eval'"),
    ("f-string payload", {"x": "$f\"{__import__('os').system('id')}\""}, "__import__"),
    ("comprehension escape", {"x": "$[c for c in ().__class__.__mro__]"}, "dunder"),
    ("loop variable call", {"x": "$[f('id') for f in @funcs]"}, "loop variable"),
    # imports
    ("import subprocess", {"x": "$import subprocess"}, "imports subprocess"),
    ("from import", {"x": "$from os import system"}, "from"),
    ("import ctypes", {"x": "$import ctypes"}, "imports ctypes"),
    ("alias shadowing", {"imports": ["$import os as np"], "x": "$np.system('id')"}, "os.system"),
    ("two statements", {"x": "$import os; os.system('id')"}, "one plain"),
    ("import then call", {"imports": ["$import os"], "x": "$os.system('id')"}, "os.system"),
    ("subprocess via os", {"imports": ["$import os"], "x": "$os.popen('id').read()"}, "os.popen"),
    # loaders and downloads inside trusted namespaces
    ("torch.load", {"x": "$torch.load('/tmp/p.pt', weights_only=False)"}, "torch.load"),
    ("torch.hub.load", {"x": "$torch.hub.load('x/y', 'm')"}, "torch.hub.load"),
    ("numpy.load pickle", {"x": "$numpy.load('a.npy', allow_pickle=True)"}, "numpy.load"),
    ("np alias load", {"x": "$np.load('a.npy', allow_pickle=True)"}, "numpy.load"),
    ("torch.ops.load_library", {"x": "$torch.ops.load_library('evil.so')"}, "allow-list"),
    ("monai.bundle.download", {"x": "$monai.bundle.download(name='x')"}, "allow-list"),
    ("monai locate", {"x": "$monai.utils.module.locate('os.system')('id')"}, "allow-list"),
    ("lesionlab writer", {"imports": ["$import lesionlab"],
                          "x": "$lesionlab.utils.atomic_write_text('/etc/cron.d/x', 'y')"}, "allow-list"),
    ("method chain on reference", {"x": "$@evaluator.network.load_state_dict(@sd)"}, "config reference"),
    ("module as value", {"x": "$[torch][0].os"}, "computed|module"),
    # targets and other executable strings
    ("target expression", {"x": {"_target_": "$__import__('os').system"}}, "__import__"),
    ("target os.system", {"x": {"_target_": "os.system", "command": "id"}}, "os.system"),
    ("target builtin open", {"x": {"_target_": "open", "file": "/etc/passwd"}}, "builtin such as exec"),
    ("target submodule escape", {"x": {"_target_": "lesionlab.transforms.array.os.system"}}, "allow-list"),
    ("target lower-case function", {"x": {"_target_": "monai.data.load_decathlon_datalist"}}, "allow-list"),
    ("target ConfigWorkflow", {"x": {"_target_": "monai.bundle.ConfigWorkflow"}}, "allow-list"),
    ("debug mode", {"x": {"_target_": "Compose", "_mode_": "debug", "transforms": []}}, "debug"),
    ("writer class path", {"x": {"_target_": "SaveImaged", "keys": "pred", "writer": "os.system"}}, "os.system"),
    ("reader class path", {"x": {"_target_": "LoadImaged", "keys": "image", "reader": "pickle.Unpickler"}},
     "pickle"),
    ("macro file", {"x": "%/tmp/evil.json#payload"}, "another file"),
    ("macro yaml file", {"x": "%../../evil.YAML#p"}, "another file"),
]


@pytest.mark.parametrize("name,config,reason", BYPASSES, ids=[b[0] for b in BYPASSES])
def test_bypass_attempt_is_refused(name, config, reason):
    findings = scan_config(config, "inference.json")
    assert findings, f"{name} passed the guard"
    text = " | ".join(f.format() for f in findings)
    assert any(re.search(reason, f.reason) for f in findings), text


def test_every_project_bundle_passes():
    """The allow-list is exactly what the project's bundles need: none of their configs gives a finding."""
    names = sorted(d for d in os.listdir(BUNDLES_DIR) if os.path.isdir(os.path.join(BUNDLES_DIR, d, "configs")))
    assert len(names) >= 4
    for name in names:
        findings = scan_bundle(os.path.join(BUNDLES_DIR, name))
        assert findings == [], [f.format() for f in findings]


def test_allowed_expressions_of_the_bundles():
    """Hand-picked allowed forms, so that a stricter guard would be noticed here and not in a hospital."""
    ok = [
        "@network_def.to(@device)", "@checkpointloader(@evaluator) if @load_pretrain else None",
        "[{'image': i} for i in @datalist]", "torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "list(sorted(glob.glob(@dataset_dir + '/**/*_t1w_deface_stx.nii.gz', recursive=True)))",
        "monai.handlers.from_engine(['pred', 'label'])", "numpy.uint8", "@bundle_root + '/models/model.pt'",
    ]
    for expr in ok:
        assert check_expression(expr, {"glob": "glob", "os": "os", "numpy": "numpy"}) == [], expr
    assert check_target("lesionlab.transforms.RegisterToTemplated") is None
    assert check_target("SupervisedEvaluator") is None


def test_payload_in_a_bundle_copy_is_found(tmp_path):
    """A bundle folder with a payload in inference.json, YAML, metadata, logging.conf and scripts/: all listed."""
    src = os.path.join(BUNDLES_DIR, "brain_mri_dunet_stroke_segmentation")
    root = tmp_path / "b"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("models", "eval", "runs"))
    cfg_path = root / "configs" / "inference.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["initialize"].append("$torch.os.system('touch /tmp/pwned')")
    cfg_path.write_text(json.dumps(cfg))
    (root / "configs" / "extra.yaml").write_text("x: \"$__import__('os').system('id')\"\n")
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    meta["description"] = "$print(1)"
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    with open(root / "configs" / "logging.conf", "a") as f:
        f.write("\n[handler_evil]\nclass=os.system\nargs=(__import__('os').system('id'),)\n")
    (root / "scripts").mkdir()
    (root / "scripts" / "__init__.py").write_text("import os\n")
    found = {(f.file, f.id.split("#")[0]) for f in scan_bundle(str(root))}
    assert ("configs/inference.json", "initialize") in found
    assert ("configs/extra.yaml", "x") in found
    assert ("configs/metadata.json", "description") in found
    assert any(f == "configs/logging.conf" for f, _ in found)
    assert ("scripts/__init__.py", "") in found
