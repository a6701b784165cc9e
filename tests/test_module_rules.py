"""Layout rules of the package that a reviewer would otherwise check by hand (issue 9).

- no module over 500 lines (split by concern before a module grows past it);
- a module's ``__all__`` is one list literal assigned once, not grown by ``__all__ +=`` from bolted-on additions.

Read as text and with ``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
import os

import lesionlab

PACKAGE = os.path.dirname(lesionlab.__file__)
MAX_LINES = 500


def _modules() -> list[str]:
    return sorted(os.path.join(folder, name) for folder, _, files in os.walk(PACKAGE)
                  for name in files if name.endswith(".py"))


def _all_assignments(tree: ast.Module) -> tuple[int, list[int]]:
    """(number of plain ``__all__ = ...`` assignments, lines of augmented ``__all__ += ...``)."""
    plain, augmented = 0, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            plain += 1
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id == "__all__":
            augmented.append(node.lineno)
    return plain, augmented


def test_no_module_over_500_lines():
    long = []
    for path in _modules():
        with open(path, encoding="utf-8") as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long.append(f"{os.path.relpath(path, PACKAGE)}: {n} lines")
    assert not long, f"modules over {MAX_LINES} lines (split them by concern):\n" + "\n".join(long)


def test_all_is_assigned_once():
    bad = []
    for path in _modules():
        with open(path, encoding="utf-8") as f:
            plain, augmented = _all_assignments(ast.parse(f.read(), filename=path))
        if plain > 1 or augmented:
            bad.append(f"{os.path.relpath(path, PACKAGE)}: {plain} assignments, += at lines {augmented}")
    assert not bad, "__all__ must be one assignment:\n" + "\n".join(bad)


def test_the_all_check_sees_both_forms():
    plain, augmented = _all_assignments(ast.parse('__all__ = ["a"]\n\n__all__ += ["b"]\n'))
    assert (plain, augmented) == (1, [3])
