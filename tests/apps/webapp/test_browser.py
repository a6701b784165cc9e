"""End to end in a real browser: ``lesionlab app``'s server on 127.0.0.1, headless Debian Chromium via Playwright.

Single analysis of a synthetic tile (the area read off the page must equal the true disk area, which the tile
bundle's hand-set weights reproduce exactly) and test-set evaluation of two image/mask pairs (scores read off the
page). Screenshots go to the test's temporary folder, and also to ``$LESIONLAB_SCREENSHOTS`` when set.
Skipped, with the reason printed, when Chromium (``apt-get install chromium``) or Playwright is missing (a failure
instead when ``LESIONLAB_REQUIRE_BROWSER`` is set, as ``.ci/run`` does). About 60 s on a loaded 2-core machine.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.apps.webapp.browser import (
    app_server,
    browser_unavailable,
    chromium_page,
    images_loaded,
    metrics,
    open_app,
    upload,
    wait_idle,
)
from tests.apps.webapp.toy_bundles import disk_image, png

pytestmark = pytest.mark.slow
REASON = browser_unavailable()
if REASON and not os.environ.get("LESIONLAB_REQUIRE_BROWSER"):
    pytest.skip(f"browser test skipped: {REASON}", allow_module_level=True)


def _shot(page, tmp_path, name: str) -> str:
    path = str(tmp_path / name)
    images_loaded(page)
    page.screenshot(path=path, full_page=True)
    if os.environ.get("LESIONLAB_SCREENSHOTS"):
        os.makedirs(os.environ["LESIONLAB_SCREENSHOTS"], exist_ok=True)
        shutil.copy(path, os.environ["LESIONLAB_SCREENSHOTS"])
    return path


def test_single_analysis_and_evaluation_in_chromium(models_dir, tmp_path):
    if REASON:
        pytest.fail(f"LESIONLAB_REQUIRE_BROWSER is set but {REASON}")
    img, mask = disk_image(96, 128, seed=11)
    tile = tmp_path / "tile_a.png"
    tile.write_bytes(png(img))
    pairs = [disk_image(80, 96, seed=s) for s in (12, 13)]
    files = []
    for i, (im, m) in enumerate(pairs):
        (tmp_path / f"pair_{i}.png").write_bytes(png(im))
        (tmp_path / f"pair_{i}_mask.png").write_bytes(png(m * 255))
        files.append((str(tmp_path / f"pair_{i}.png"), str(tmp_path / f"pair_{i}_mask.png")))
    server_tmp = tmp_path / "server_tmp"
    server_tmp.mkdir()
    with app_server(models_dir, {"TMPDIR": str(server_tmp)}) as url, chromium_page() as page:
        open_app(page, url)
        upload(page, [str(tile)])
        page.get_by_role("button", name="Start analysis").click()
        page.locator('[data-testid="stMetric"]').first.wait_for(timeout=600000)  # model build on a loaded CPU
        wait_idle(page)
        assert metrics(page) == {"glomerulus area (pixels)": str(int(mask.sum()))}
        assert page.get_by_text("Prediction overlay").is_visible()
        _shot(page, tmp_path, "webapp_single.png")
        assert not [p for p in os.listdir(server_tmp) if p.startswith("lesionlab-upload-")]  # uploads removed

        page.locator('[data-testid="stSidebar"]').get_by_text("Test-set evaluation").click()
        page.get_by_role("heading", name="Test-set evaluation: Image segmentation (2D tiles)").wait_for()
        wait_idle(page)
        upload(page, [f for f, _ in files], index=0)
        upload(page, [m for _, m in files], index=1)
        page.get_by_text("2 image/mask pair(s).").wait_for()
        page.get_by_role("button", name="Start evaluation").click()
        page.locator('[data-testid="stMetric"]').first.wait_for(timeout=600000)  # model build on a loaded CPU
        wait_idle(page)
        assert metrics(page) == {"aAcc (%)": "100.00", "mIoU (%)": "100.00", "mDice (%)": "100.00"}
        _shot(page, tmp_path, "webapp_evaluation.png")
        assert page.locator('[data-testid="stDownloadButton"]').filter(has_text="Metrics (CSV)").is_visible()
        assert page.get_by_text("Confusion matrix (rows: true class").is_visible()
