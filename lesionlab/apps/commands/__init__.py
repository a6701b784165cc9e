"""The sub-commands of ``lesionlab`` (:mod:`lesionlab.apps.cli`), one module per group; each handler imports its
work inside the function, so ``lesionlab --help`` stays fast and tests can monkeypatch the module it calls.

Modules, each with ``add_parsers(sub)`` registering its sub-commands with ``set_defaults(func=...)``:

* :mod:`~lesionlab.apps.commands.data`: ``synth <dataset>``, ``datalist``, ``datalist-glomeruli``, ``tile hubmap``.
* :mod:`~lesionlab.apps.commands.train`: ``demo`` (``add_demo_parser``), ``run``, ``experiments <paper>``.
* :mod:`~lesionlab.apps.commands.deploy`: ``wsi`` (``add_wsi_parser``), ``export-ts``, ``export``, ``verify``,
  ``infer``.
* :mod:`~lesionlab.apps.commands.tools`: ``app`` (the web app), ``bench``.
"""

from __future__ import annotations

from collections.abc import Sequence

from lesionlab.errors import LesionlabError

__all__ = ["parse_overrides"]


def parse_overrides(items: Sequence[str] | None) -> dict:
    """``ID=VALUE`` strings -> dict; values are Python literals when they parse as such, else strings."""
    import ast

    overrides: dict = {}
    for item in items or []:
        if "=" not in item:
            raise LesionlabError(f"--set expects ID=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            overrides[key] = value
    return overrides
