"""Drive the web app in a real browser: the Streamlit server as a subprocess, Debian's Chromium via Playwright.

Playwright is used only with ``executable_path`` (the system Chromium, ``apt-get install chromium``); no browser is
ever downloaded. Used by the end-to-end test and by ``tools/webapp_screenshots.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator

CHROMIUM = os.environ.get("LESIONLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def browser_unavailable() -> str | None:
    """Why the browser test cannot run here, or None when it can."""
    import importlib.util

    if importlib.util.find_spec("playwright") is None:
        return "the python package playwright is not installed (pip install 'lesionlab[dev]')"
    if importlib.util.find_spec("streamlit") is None:
        return "streamlit is not installed (pip install 'lesionlab[app]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def app_server(models: str, env_extra: dict | None = None, timeout: float = 90.0) -> Iterator[str]:
    """Run ``lesionlab app``'s server on 127.0.0.1 and a free port with ``models`` only; yield its URL."""
    from lesionlab.apps.webapp.launch import app_environment, streamlit_command

    port = free_port()
    env = app_environment([models], max_upload_mb=50, device="cpu", project_bundles=False)
    env.update(env_extra or {})
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(streamlit_command("127.0.0.1", port, 50), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.seek(0)
                raise RuntimeError(f"the app server did not start: {log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 900) -> Iterator:
    """A Playwright page in headless Debian Chromium with a fresh profile folder."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="lesionlab-chromium-")
    try:
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                       args=CHROMIUM_ARGS, viewport={"width": width, "height": height})
            try:
                page = ctx.pages[0] if ctx.pages else ctx.new_page()
                page.set_default_timeout(120000)
                yield page
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def wait_idle(page, timeout: float = 120.0) -> None:
    """Wait until Streamlit has finished the current script run (no 'running' indicator)."""
    page.wait_for_timeout(300)
    deadline = time.time() + timeout
    while time.time() < deadline:
        busy = sum(page.locator(sel).count() for sel in ('[data-testid="stStatusWidget"]', '[data-testid="stSkeleton"]',
                                                         '[data-stale="true"]'))
        if busy == 0:
            return
        page.wait_for_timeout(200)
    raise TimeoutError(f"the app is still running after {timeout:.0f} s")


def images_loaded(page) -> None:
    """Wait until every image of the page has been fetched and decoded."""
    page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")


def open_app(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name="lesionlab analysis").wait_for()
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.wait_for()
    wait_idle(page)


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the sidebar selectbox labelled ``label``."""
    page.locator('[data-testid="stSidebar"]').get_by_label(label).click()
    page.get_by_role("option", name=option).click()
    wait_idle(page)


def upload(page, paths: list[str], index: int = 0) -> None:
    """Put files into the ``index``-th file uploader of the page."""
    sel = '[data-testid="stFileUploaderDropzoneInput"]' + ("[multiple]" if len(paths) > 1 else "")
    page.locator(sel).nth(index).set_input_files(paths)
    page.wait_for_timeout(500)
    wait_idle(page)


def metrics(page) -> dict[str, str]:
    """``{label: value}`` of every ``st.metric`` on the page."""
    out = {}
    for m in page.locator('[data-testid="stMetric"]').all():
        label = m.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        out[label] = m.locator('[data-testid="stMetricValue"]').inner_text().strip()
    return out
