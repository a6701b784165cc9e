"""The sub-commands of ``lesionlab`` (:mod:`lesionlab.apps.cli`), one module per group; each handler imports its
work inside the function, so ``lesionlab --help`` stays fast and tests can monkeypatch the module it calls. ``--set
ID=VALUE`` options are read by :func:`lesionlab.apps.deploy.config.parse_overrides`, as everywhere else.

Modules, each with ``add_parsers(sub)`` registering its sub-commands with ``set_defaults(func=...)``:

* :mod:`~lesionlab.apps.commands.data`: ``synth <dataset>``, ``datalist``, ``datalist-glomeruli``, ``tile hubmap``.
* :mod:`~lesionlab.apps.commands.train`: ``demo`` (``add_demo_parser``), ``run``, ``experiments <paper>``.
* :mod:`~lesionlab.apps.commands.deploy`: ``wsi`` (``add_wsi_parser``), ``export-ts``, ``export``, ``verify``,
  ``infer``.
* :mod:`~lesionlab.apps.commands.tools`: ``app`` (the web app), ``bench``.
"""

from __future__ import annotations
