"""The package's import graph points one way: data -> transforms -> networks -> pipelines -> apps.

A module may import from its own layer and the layers before it (and from the layer-free ``lesionlab.errors``,
``lesionlab.utils``, ``lesionlab.resources``), never from a later one: a reader must not need a network, a network
not an engine, and nothing below ``apps`` the command line. Imports inside functions count too. Read with ``ast``,
nothing is imported.
"""

from __future__ import annotations

import ast
import os

import lesionlab

LAYERS = ("data", "transforms", "networks", "pipelines", "apps")
PACKAGE = os.path.dirname(lesionlab.__file__)


def _imports(path: str, module: str) -> list[tuple[str, int]]:
    """Every ``lesionlab.*`` module that ``path`` (the module ``module``) imports, with the line."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            out += [(f"{base}.{a.name}" if base else a.name, node.lineno) for a in node.names]
    return [(name, line) for name, line in out if name.split(".")[0] == "lesionlab"]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
                yield path, rel.removesuffix(".__init__")


def test_no_upward_import():
    upward = []
    for path, module in _modules():
        own = _layer(module)
        for name, line in _imports(path, module):
            target = _layer(name)
            if own is not None and target is not None and target > own:
                upward.append(f"{module}:{line} ({LAYERS[own]}) imports {name} ({LAYERS[target]})")
    assert not upward, "imports against data -> transforms -> networks -> pipelines -> apps:\n" + "\n".join(upward)


def test_the_check_sees_imports():
    # the walker finds absolute, relative and function-level imports (a check that sees nothing would pass)
    found = {name for path, module in _modules() for name, _ in _imports(path, module)}
    assert "lesionlab.transforms.array.ValidateVolume" in found  # relative, in transforms/dictionary.py
    assert "lesionlab.data.validation.check_volume" in found  # inside a method of transforms/array.py
    assert any(name.startswith("lesionlab.pipelines.case_runner") for name in found)  # inside apps/deploy/infer.py
    assert {_layer(m) for _, m in _modules()} >= set(range(len(LAYERS)))
