"""Config guard: an allow-list check of everything a bundle's configs would execute, run before any of it executes.

A MONAI bundle config executes code in three ways: ``$`` expressions (``eval``/``exec`` by MONAI's
``ConfigExpression``), ``_target_`` names (located and called by ``ConfigComponent``; a dotless name that is not a
MONAI component resolves to a Python builtin, e.g. ``"exec"``) and dotted class paths in a few string arguments
(``SaveImaged``'s ``writer``, ``LoadImaged``'s ``reader``). A deny-list of bad names always misses one
(``torch.os.system``, ``os.path.os.system``, ``monai.utils.optional_import('os')[0].system``...). This guard accepts
only what is on explicit allow-lists, the things the project's bundles need, and rejects everything else:

* a ``$`` expression is parsed with :mod:`ast` (``@id`` references replaced by placeholders, as MONAI replaces them)
  and every node must be of an allowed kind: constants, names, containers, comprehensions, arithmetic, comparisons,
  boolean and conditional expressions, subscripts, calls and attribute access. Names must be config references,
  comprehension variables, :data:`ALLOWED_BUILTINS` or imported modules of :data:`ALLOWED_IMPORTS`. An attribute
  chain on a module must be in :data:`ALLOWED_CHAINS` exactly (a callable or a value such as ``torch.float32``);
  on a config reference only :data:`ALLOWED_REF_METHODS` may be called. Attribute access on anything else (a call
  result, a subscript), dunder names, ``lambda``, ``:=``, ``getattr``/``eval``/``exec``/``open``/``__import__``,
  ``from`` imports and imports of other modules are refused. One expression per string.
* a ``_target_`` must be in :data:`ALLOWED_SHORT_TARGETS`, in :data:`ALLOWED_TARGETS`, or be one CamelCase class name
  directly inside a module of :data:`ALLOWED_TARGET_MODULES`; ``_mode_`` ``"debug"`` (runs pdb) is refused.
* ``%`` macros that read another file, ``$`` expressions in ``metadata.json``, custom ``scripts/`` code, and
  ``logging.conf`` lines that ``logging.fileConfig`` would evaluate are findings too.

:func:`scan_bundle` returns the findings (empty: the bundle passes); :func:`check_expression` and
:func:`check_target` check one item. ``verify`` and ``infer`` run the guard (after the manifest check) before a
single config item is instantiated, and refuse a bundle with findings unless the user passes ``--trust``.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ALLOWED_BUILTINS",
    "ALLOWED_IMPORTS",
    "ALLOWED_CHAINS",
    "ALLOWED_REF_METHODS",
    "ALLOWED_SHORT_TARGETS",
    "ALLOWED_TARGETS",
    "ALLOWED_TARGET_MODULES",
    "Finding",
    "check_expression",
    "check_target",
    "scan_config",
    "scan_bundle",
]

#: builtins an expression may call (pure functions on values; no getattr, eval, exec, open, vars, type...)
ALLOWED_BUILTINS = frozenset({
    "list", "tuple", "dict", "set", "sorted", "len", "range", "min", "max", "sum", "abs", "round", "int", "float",
    "str", "bool", "zip", "enumerate", "any", "all", "reversed",
})
#: modules an expression may import (``$import x``, also ``as`` another name) or use as MONAI predefines them
ALLOWED_IMPORTS = frozenset({"glob", "os", "math", "numpy", "torch", "monai", "lesionlab", "ignite"})
_PREDEFINED = {"monai": "monai", "torch": "torch", "np": "numpy", "numpy": "numpy"}  # MONAI's expression globals
#: attribute chains on modules an expression may use: callables that only read or build values, and dtypes
ALLOWED_CHAINS = frozenset({
    "glob.glob", "glob.iglob",
    "os.sep", "os.path.join", "os.path.exists", "os.path.isfile", "os.path.isdir", "os.path.basename",
    "os.path.dirname", "os.path.abspath", "os.path.normpath", "os.path.splitext",
    "math.pi", "math.sqrt", "math.ceil", "math.floor", "math.log", "math.exp",
    "torch.device", "torch.cuda.is_available", "torch.jit.load",
    "torch.float16", "torch.float32", "torch.float64", "torch.bfloat16", "torch.uint8", "torch.int16", "torch.int32",
    "torch.int64", "torch.long", "torch.bool",
    "numpy.uint8", "numpy.int16", "numpy.int32", "numpy.int64", "numpy.uint16", "numpy.float16", "numpy.float32",
    "numpy.float64", "numpy.bool_",
    "monai.utils.set_determinism", "monai.handlers.from_engine", "monai.transforms.Compose",
    "lesionlab.pipelines.finetune.finetune_setup", "lesionlab.pipelines.finetune.trainable_parameters",
    "lesionlab.pipelines.classification.class_scores_and_indices", "lesionlab.pipelines.classification.image_meta",
    "lesionlab.pipelines.classification.copy_asset_folder",
    "lesionlab.apps.figures.plot_engine_confusion_matrix", "lesionlab.apps.figures.plot_confusion_matrix",
    "lesionlab.pipelines.nuclei_data.class_names",
    # distributed training (multi_gpu_train.json)
    "lesionlab.pipelines.distributed.local_device", "lesionlab.pipelines.distributed.ddp_device_ids",
    "lesionlab.pipelines.distributed.rank_handlers", "lesionlab.pipelines.distributed.init_distributed",
    "lesionlab.pipelines.distributed.destroy_distributed", "lesionlab.pipelines.distributed.rank",
    "lesionlab.pipelines.distributed.world_size",
})
#: methods an expression may call on a config reference (``@evaluator.run()``, ``@network_def.to(@device)``...)
ALLOWED_REF_METHODS = frozenset({"run", "to", "parameters", "attach", "eval", "split", "set_trainer"})
#: dotless ``_target_`` names (MONAI components) the bundles use
ALLOWED_SHORT_TARGETS = frozenset({
    "Activationsd", "AsDiscreted", "AttentionUnet", "BasicUNet", "BasicUNetPlusPlus", "CacheDataset",
    "CheckpointLoader", "CheckpointSaver", "Compose", "CropForegroundd", "DataLoader", "Dataset", "DiceCELoss",
    "DiceLoss", "DynUNet", "EarlyStopHandler", "EnsureChannelFirstd", "EnsureTyped", "Invertd", "Lambdad",
    "LoadImaged", "LrScheduleHandler", "MeanDice", "NormalizeIntensityd", "Orientationd", "RandCropByPosNegLabeld",
    "RandFlipd", "RandRotate90d", "RandScaleIntensityd", "RandShiftIntensityd", "SaveImaged", "ScaleIntensityd",
    "ScaleIntensityRanged", "SegResNet", "SimpleInferer", "SlidingWindowInferer", "Spacingd", "SpatialPadd",
    "StatsHandler", "SupervisedEvaluator", "SupervisedTrainer", "TensorBoardStatsHandler", "UNet", "ValidationHandler",
    # classification and tile bundles
    "ClassificationSaver", "CopyItemsd", "DistributedSampler", "Identityd", "RandSpatialCropd", "RandZoomd",
    "RandGaussianNoised", "RandRotated", "Resized",
    "load_decathlon_datalist",
})
#: dotted ``_target_`` names allowed one by one (functions)
ALLOWED_TARGETS = frozenset({"torch.narrow", "lesionlab.data.validation.load_checked_datalist",
                             "lesionlab.pipelines.per_case.run_each_case",
                             "lesionlab.pipelines.nuclei_data.nuclei_class_shares",
                             "lesionlab.pipelines.nuclei_data.nuclei_split",
                             "lesionlab.pipelines.imbalance_losses.build_imbalance_loss",
                             "lesionlab.pipelines.renogram.renogram_inference_items",
                             "monai.data.load_decathlon_datalist", "monai.handlers.stopping_fn_from_metric"})
#: modules whose CamelCase classes may be ``_target_`` (and ``writer``/``reader`` class paths)
ALLOWED_TARGET_MODULES = frozenset({
    "lesionlab.networks.nets", "lesionlab.networks.utils", "lesionlab.transforms", "lesionlab.pipelines.inferers",
    "lesionlab.pipelines.losses", "lesionlab.pipelines.metrics", "lesionlab.pipelines.handlers",
    "lesionlab.pipelines.resume", "lesionlab.data.writers",
    "monai.transforms", "monai.networks.nets", "monai.losses", "monai.metrics", "monai.handlers", "monai.inferers",
    "monai.engines", "monai.data",
    "torch.optim", "torch.optim.lr_scheduler", "torch.nn",
    "lesionlab.data.mixup", "lesionlab.apps.classification", "ignite.metrics",
    "lesionlab.data.nuclei", "lesionlab.pipelines.nuclei_metrics", "lesionlab.pipelines.two_stage",
    "lesionlab.pipelines.imbalance_losses", "lesionlab.pipelines.renogram", "lesionlab.networks.nets.deeplabv3plus",
    "lesionlab.pipelines.glomeruli", "lesionlab.pipelines.confusion", "torch.utils.data", "lesionlab.pipelines.slices",
    "lesionlab.pipelines.distributed", "torch.nn.parallel", "ignite.distributed.auto",
})
#: string arguments that MONAI turns into a class by its dotted path
_CLASS_PATH_KEYS = ("writer", "reader")
_DENIED_CLASSES = frozenset({"ConfigParser", "ConfigExpression", "ConfigComponent", "ConfigItem", "ConfigWorkflow"})
_REF = re.compile(r"@([A-Za-z0-9_#:]+)")
_CAMEL = re.compile(r"[A-Z][A-Za-z0-9]*")
_OK_NODES = (
    ast.Expression, ast.Constant, ast.Name, ast.Load, ast.Store, ast.Attribute, ast.Call, ast.keyword, ast.List,
    ast.Tuple, ast.Dict, ast.Set, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension,
    ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Subscript, ast.Slice, ast.JoinedStr,
    ast.FormattedValue, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.expr_context,
)


@dataclass
class Finding:
    """One config item the guard refuses: ``file`` (relative to the bundle), config ``id``, its ``text``, ``reason``."""

    file: str
    id: str
    text: str
    reason: str

    def format(self) -> str:
        where = f"{self.file}:{self.id}" if self.id else self.file
        return f"{where}: {self.reason}" + (f" [{self.text[:100]}]" if self.text else "")


def _imports(text: str) -> dict[str, str] | str:
    """``{alias: module}`` of an ``import`` expression, or why it is refused."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return "not a parseable import"
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Import):
        return "only one plain 'import module' per expression is allowed ('from' imports are refused)"
    out = {}
    for alias in tree.body[0].names:
        # a submodule of the project's own package is as trusted as the package; other modules only by name
        if alias.name not in ALLOWED_IMPORTS and not alias.name.startswith("lesionlab."):
            return f"imports {alias.name} (allowed: {', '.join(sorted(ALLOWED_IMPORTS))})"
        out[alias.asname or alias.name] = alias.name  # as MONAI binds it: 'import a.b' binds the key 'a.b'
    return out


def _chain(node: ast.AST) -> tuple[ast.AST, list[str]]:
    """The base of an attribute chain and the attribute names after it (``a.b.c`` -> ``(Name a, ['b', 'c'])``)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return node, list(reversed(parts))


def check_expression(expr: str, modules: Mapping[str, str] | None = None) -> list[str]:
    """Why the ``$`` expression ``expr`` (without the ``$``) is refused; an empty list when it is allowed.

    Args:
        expr: the expression text.
        modules: ``{name: module}`` bound by the config's ``$import`` entries (MONAI's own ``monai``, ``torch``,
            ``np``/``numpy`` are added).
    """
    text = expr.strip()
    if re.match(r"(import|from)\s", text):
        found = _imports(text)
        return [found] if isinstance(found, str) else []
    names = {**_PREDEFINED, **(modules or {})}
    refs: dict[str, str] = {}

    def placeholder(m: re.Match) -> str:
        key = f"_cfgref{len(refs)}_"
        refs[key] = m.group(1)
        return key

    code = _REF.sub(placeholder, text)
    try:
        tree = ast.parse(code, mode="eval")
    except SyntaxError as err:
        return [f"not a single Python expression ({err.msg})"]
    problems: list[str] = []
    local = {n.id for c in ast.walk(tree) if isinstance(c, ast.comprehension) for n in ast.walk(c.target)
             if isinstance(n, ast.Name)}
    chained: set[int] = set()  # Name/Attribute nodes already judged as part of a chain
    for node in ast.walk(tree):
        if not isinstance(node, _OK_NODES):
            problems.append(f"{type(node).__name__} is not allowed in a config expression")
            continue
        if isinstance(node, ast.Attribute) and id(node) not in chained:
            base, attrs = _chain(node)
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Attribute, ast.Name)) and (sub is base or isinstance(sub, ast.Attribute)):
                    chained.add(id(sub))
            if any(a.startswith("_") for a in attrs):
                problems.append(f"private or dunder attribute {'.'.join(attrs)!r}")
            elif isinstance(base, ast.Name) and base.id in refs:
                if len(attrs) != 1 or attrs[0] not in ALLOWED_REF_METHODS:
                    problems.append(f"@{refs[base.id]}.{'.'.join(attrs)} (on a config reference only "
                                    f"{', '.join(sorted(ALLOWED_REF_METHODS))} may be used)")
            elif isinstance(base, ast.Name) and base.id in names:
                full = ".".join([names[base.id], *attrs])
                if full not in ALLOWED_CHAINS:
                    problems.append(f"{full} is not on the allow-list")
            elif isinstance(base, ast.Name) and base.id in local:
                problems.append(f"attribute access on the loop variable {base.id!r}")
            else:
                problems.append(f"attribute {'.'.join(attrs)!r} of a computed value or unknown name "
                                f"({ast.unparse(base)[:60]!r})")
        elif isinstance(node, ast.Name) and id(node) not in chained:
            if node.id in refs or node.id in local or node.id in ALLOWED_BUILTINS:
                continue
            if node.id in names:
                problems.append(f"module {names[node.id]} used as a value (only allow-listed attributes of it)")
            else:
                problems.append(f"name {node.id!r} is not allowed (builtins allowed: "
                                f"{', '.join(sorted(ALLOWED_BUILTINS))})")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in local:
            problems.append(f"call of the loop variable {node.func.id!r}")
    return list(dict.fromkeys(problems))


def check_target(target: str) -> str | None:
    """Why a ``_target_`` (or a ``writer``/``reader`` class path) is refused, or ``None`` when it is allowed."""
    t = target.strip()
    if "." not in t:
        return None if t in ALLOWED_SHORT_TARGETS else (
            f"_target_ {t!r} is not an allow-listed MONAI component (a dotless unknown name resolves to a Python "
            "builtin such as exec)")
    if t in ALLOWED_TARGETS:
        return None
    module, _, name = t.rpartition(".")
    if module in ALLOWED_TARGET_MODULES and _CAMEL.fullmatch(name) and name not in _DENIED_CLASSES:
        return None
    return f"{t} is not on the allow-list of components"


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}#{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{prefix}#{i}" if prefix else str(i))
    yield prefix, node


def scan_config(config: Any, file: str = "config", base_imports: Any = None) -> list[Finding]:
    """Findings of one parsed config (a JSON/YAML document).

    ``base_imports``: the ``imports`` list of the config this one is merged over (an override such as
    ``evaluate.json`` over ``train.json`` without its own ``imports`` uses the base's bindings); only allowed imports
    bind names (the base file's own scan reports the others).
    """
    findings: list[Finding] = []
    entries = list(_walk(config))
    modules: dict[str, str] = {}
    if base_imports and not (isinstance(config, Mapping) and "imports" in config):
        for value in base_imports if isinstance(base_imports, list) else []:
            found = _imports(value.strip()[1:].strip()) if isinstance(value, str) and value.startswith("$") else ""
            if isinstance(found, dict):
                modules.update(found)
    for cid, value in entries:  # imports first: MONAI binds them for every expression of the config
        if isinstance(value, str) and re.match(r"\$\s*(import|from)\s", value):
            found = _imports(value.strip()[1:].strip())
            if isinstance(found, str):
                findings.append(Finding(file, cid, value, found))
                continue
            for alias, module in found.items():
                if modules.get(alias, module) != module:
                    findings.append(Finding(file, cid, value, f"name {alias!r} is bound to two modules"))
                modules[alias] = module
    for cid, value in entries:
        if isinstance(value, str) and value.startswith("$"):
            if re.match(r"\$\s*(import|from)\s", value):
                continue
            for problem in check_expression(value[1:], modules):
                findings.append(Finding(file, cid, value, problem))
        elif isinstance(value, str) and value.startswith("%") and re.search(r"\.(json|ya?ml)$",
                                                                             value[1:].split("#")[0].strip().lower()):
            findings.append(Finding(file, cid, value, "macro reads another file at parse time"))
        elif isinstance(value, Mapping):
            target = value.get("_target_")
            if isinstance(target, str) and not target.startswith("$"):
                problem = check_target(target)
                if problem:
                    findings.append(Finding(file, cid, target, problem))
            elif target is not None and not isinstance(target, str):
                findings.append(Finding(file, cid, repr(target)[:100], "_target_ must be a string"))
            if str(value.get("_mode_", "default")) not in ("default", "callable"):
                findings.append(Finding(file, cid, str(value.get("_mode_")), "_mode_ other than default/callable "
                                                                              "('debug' runs pdb)"))
            for key in _CLASS_PATH_KEYS:
                path = value.get(key)
                if isinstance(path, str) and "." in path and not path.startswith(("$", "@")):
                    problem = check_target(path)
                    if problem:
                        findings.append(Finding(file, f"{cid}#{key}" if cid else key, path, problem))
    return findings


def _logging_conf(path: str, rel: str) -> list[Finding]:
    """``logging.conf`` lines that ``logging.fileConfig`` would ``eval``: non-stdlib classes, non-literal args."""
    findings = []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for n, line in enumerate(lines, start=1):
        key, _, value = line.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "class" and not re.fullmatch(r"(logging\.(handlers\.)?)?[A-Za-z]+(Handler|Formatter)", value):
            findings.append(Finding(rel, f"line {n}", line.strip(), "handler class outside logging"))
        if key in ("args", "kwargs"):
            try:
                ast.literal_eval(value.replace("sys.stdout", "None").replace("sys.stderr", "None"))
            except (ValueError, SyntaxError):
                findings.append(Finding(rel, f"line {n}", line.strip(),
                                        "non-literal handler arguments (evaluated as code by logging.fileConfig)"))
    return findings


def _load(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        if path.endswith(".json"):
            return json.load(f)
        import yaml

        return yaml.safe_load(f)


def scan_bundle(root: str) -> list[Finding]:
    """Every finding of the bundle folder ``root``: its configs (JSON and YAML, sub-folders included), ``$``
    expressions in ``metadata.json``, ``logging.conf`` and custom code in ``scripts/``. Nothing is imported or run."""
    findings: list[Finding] = []
    configs = os.path.join(root, "configs")
    train_path = os.path.join(configs, "train.json")
    try:
        base_imports = _load(train_path).get("imports") if os.path.isfile(train_path) else None
    except Exception:  # noqa: BLE001 - reported below when train.json itself is scanned
        base_imports = None
    for folder, dirs, files in os.walk(configs):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if name.endswith(".conf"):
                findings += _logging_conf(path, rel)
                continue
            if not name.endswith((".json", ".yaml", ".yml")):
                continue
            try:
                config = _load(path)
            except Exception as err:  # noqa: BLE001 - a config that cannot be read cannot be checked
                findings.append(Finding(rel, "", "", f"unreadable, so it cannot be checked ({err})"[:300]))
                continue
            if name == "metadata.json":
                findings += [Finding(rel, cid, v, "metadata holds a $ expression (MONAI evaluates _meta_ items)")
                             for cid, v in _walk(config) if isinstance(v, str) and v.startswith("$")]
                continue
            findings += scan_config(config, rel, None if name in ("train.json", "inference.json") else base_imports)
    scripts = os.path.join(root, "scripts")
    for folder, dirs, files in os.walk(scripts):
        dirs.sort()
        findings += [Finding(os.path.relpath(os.path.join(folder, f), root), "", "",
                             "custom Python code in the bundle (run when the bundle is used)")
                     for f in sorted(files) if f.endswith(".py")]
    return findings
