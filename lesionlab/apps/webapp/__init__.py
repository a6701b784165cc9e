"""The lesionlab web app: a Streamlit front for every lesionlab bundle (seed 000 §8, grown to every task).

Modules:

* :mod:`~lesionlab.apps.webapp.tasks`: the task adapter; reads what the app needs from a bundle's metadata.
* :mod:`~lesionlab.apps.webapp.model`: a bundle's own inference workflow, built once per process; model discovery.
* :mod:`~lesionlab.apps.webapp.uploads`: uploads checked and prepared in a temporary folder removed afterwards.
* :mod:`~lesionlab.apps.webapp.render`: overlays, legends, class areas, volumes, Grad-CAM, download files.
* :mod:`~lesionlab.apps.webapp.evaluation`: image/mask pairing and the confusion-matrix scores table.
* :mod:`~lesionlab.apps.webapp.app`: the Streamlit script (sidebar, password); ``page_single`` and ``page_evaluate``
  draw the two functions.
* :mod:`~lesionlab.apps.webapp.launch`: ``lesionlab app`` (starts Streamlit on this script).

Streamlit is imported only by ``app``, ``page_single``, ``page_evaluate``; the other modules work without it.
"""

from __future__ import annotations

import os

APP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app.py")

__all__ = ["APP_FILE"]
