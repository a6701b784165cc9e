"""``lesionlab app``: start the Streamlit server on the app script with the project's settings.

Equivalent to ``streamlit run lesionlab/apps/webapp/app.py --server.address ADDR --server.port N ...`` with the
settings passed as environment variables (see :mod:`lesionlab.apps.webapp.app`). Streamlit's own telemetry is off,
the file watcher is off (a served app does not reload itself), and the browser is not opened.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from lesionlab.apps.webapp import APP_FILE
from lesionlab.errors import LesionlabError

__all__ = ["streamlit_command", "app_environment", "run_app"]


def streamlit_command(host: str = "127.0.0.1", port: int = 8501, max_upload_mb: int = 1024,
                      extra: Sequence[str] = ()) -> list[str]:
    """The ``python -m streamlit run`` command line of the app."""
    return [sys.executable, "-m", "streamlit", "run", APP_FILE,
            "--server.address", host, "--server.port", str(port), "--server.headless", "true",
            "--server.maxUploadSize", str(int(max_upload_mb)), "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal",
            "--client.showErrorDetails", "none", *extra]


def app_environment(models: Sequence[str] = (), max_upload_mb: int | None = None, device: str | None = None,
                    project_bundles: bool = True, base: dict | None = None) -> dict[str, str]:
    """Environment of the server process: the app's settings added to ``base`` (default: this process's)."""
    env = dict(os.environ if base is None else base)
    if models:
        env["LESIONLAB_APP_MODELS"] = os.pathsep.join(os.path.abspath(m) for m in models)
    if max_upload_mb is not None:
        env["LESIONLAB_APP_MAX_UPLOAD_MB"] = str(max_upload_mb)
    if device:
        env["LESIONLAB_APP_DEVICE"] = device
    if not project_bundles:
        env["LESIONLAB_APP_PROJECT_BUNDLES"] = "0"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(APP_FILE))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def run_app(host: str = "127.0.0.1", port: int = 8501, models: Sequence[str] = (), max_upload_mb: int = 1024,
            device: str | None = None, project_bundles: bool = True) -> int:
    """Run the server in the foreground until it stops (Ctrl-C); return its exit code.

    Raises:
        LesionlabError: Streamlit is not installed (``pip install lesionlab[app]``), or a models folder is missing.
    """
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise LesionlabError("the web app needs Streamlit: pip install 'lesionlab[app]'")
    for m in models:
        if not os.path.exists(m):
            raise LesionlabError(f"{m}: no such models folder or archive")
    if not 1 <= port <= 65535:
        raise LesionlabError(f"--port must be 1-65535, got {port}")
    cmd = streamlit_command(host, port, max_upload_mb)
    print(f"lesionlab app on http://{host}:{port} (Ctrl-C stops it)"
          + ("; reachable from the LAN" if host in ("0.0.0.0", "::") else ""), flush=True)
    proc = subprocess.Popen(cmd, env=app_environment(models, max_upload_mb, device, project_bundles))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()
