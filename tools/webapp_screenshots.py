"""Screenshots of every mode of the web app for the README (docs/webapp_*.png), taken in headless Chromium.

Starts the app's server on 127.0.0.1 with the test bundles of ``tests/apps/webapp/toy_bundles.py`` (2D tiles,
classification) plus a volume bundle, drives it like a user and saves small PNGs (palette-quantised, < 300 KB):

* ``webapp_single_tile.png``: single analysis of a synthetic PAS-like tile (overlay, legend, area, downloads);
* ``webapp_volume.png``: a NIfTI volume with the slice slider and the lesion volume in mL;
* ``webapp_classification.png``: class probabilities and the Grad-CAM overlay;
* ``webapp_evaluation.png``: test-set evaluation of two image/mask pairs.

Run: ``.venv/bin/python tools/webapp_screenshots.py --volume-bundle demo_output/brain_mri_dunet_stroke_segmentation
--volume <T1 .nii.gz> [--out docs]`` (without ``--volume-bundle`` the narrow random-weight 3D U-Net test bundle is
used, and its mask is meaningless). Needs Debian's chromium and the python package playwright.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _save_small(src: str, dst: str, width: int = 1100) -> int:
    from PIL import Image

    img = Image.open(src).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.quantize(colors=256, method=Image.MEDIANCUT).save(dst, optimize=True)
    return os.path.getsize(dst)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs")
    ap.add_argument("--volume-bundle", help="trained volume bundle (folder or archive)")
    ap.add_argument("--volume", help="NIfTI volume to show (default: a synthetic ATLAS subject)")
    args = ap.parse_args()

    from tests.apps.webapp.browser import app_server, choose, chromium_page, images_loaded, open_app, upload, wait_idle
    from tests.apps.webapp.toy_bundles import (
        disk_image,
        make_crop_classifier,
        make_tile_bundle,
        make_volume_bundle,
        png,
    )

    tmp = tempfile.mkdtemp(prefix="lesionlab-shots-")
    try:
        models = os.path.join(tmp, "models")
        make_tile_bundle(os.path.join(models, "glomerulus_tiles_test"))
        make_crop_classifier(os.path.join(models, "glomerulus_lesions_test"))
        if args.volume_bundle:
            shutil.copytree(args.volume_bundle, os.path.join(models, os.path.basename(args.volume_bundle.rstrip("/"))),
                            ignore=shutil.ignore_patterns("eval", "*.ts", "logs", "runs"))
        else:
            make_volume_bundle(os.path.join(models, "stroke_3d_test"))
        volume = args.volume
        if not volume:
            import glob

            from lesionlab.data.synthetic import synth_atlas

            synth_atlas(os.path.join(tmp, "atlas"), n=1, seed=5, progress=False)
            volume = sorted(glob.glob(os.path.join(tmp, "atlas", "**", "*_t1w_deface_stx.nii.gz"), recursive=True))[0]
        img, _ = disk_image(150, 200, seed=21, n=5)
        tile = os.path.join(tmp, "pas_tile_07.png")
        with open(tile, "wb") as f:
            f.write(png(img))
        pairs = []
        for i in range(2):
            im, m = disk_image(192, 256, seed=30 + i, n=4)
            for name, data in ((f"tile_{i}.png", png(im)), (f"tile_{i}_mask.png", png(m * 255))):
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
            pairs.append((os.path.join(tmp, f"tile_{i}.png"), os.path.join(tmp, f"tile_{i}_mask.png")))
        os.makedirs(args.out, exist_ok=True)
        shots = []
        with app_server(models) as url, chromium_page(1280, 1000) as page:
            def shot(name: str) -> None:
                images_loaded(page)
                raw = os.path.join(tmp, name)
                page.screenshot(path=raw, full_page=True)
                size = _save_small(raw, os.path.join(args.out, name))
                shots.append((name, size))

            def analyse(path: str) -> float:
                upload(page, [path])
                t0 = time.perf_counter()
                page.get_by_role("button", name="Start analysis").click()
                page.wait_for_timeout(1000)
                wait_idle(page, 900)
                page.get_by_text("Upload to result:").wait_for(timeout=600000)
                return time.perf_counter() - t0

            open_app(page, url)
            print(f"tile: {analyse(tile):.2f} s from click to result (includes loading the model)")
            shot("webapp_single_tile.png")
            choose(page, "Task", "Volume segmentation (NIfTI / DICOM)")
            print(f"volume: {analyse(volume):.2f} s from click to result (includes loading the model)")
            shot("webapp_volume.png")
            choose(page, "Task", "Image classification")
            analyse(tile)
            shot("webapp_classification.png")
            choose(page, "Task", "Image segmentation (2D tiles)")
            page.locator('[data-testid="stSidebar"]').get_by_text("Test-set evaluation").click()
            page.get_by_role("heading", name="Test-set evaluation: Image segmentation (2D tiles)").wait_for()
            wait_idle(page)
            upload(page, [p for p, _ in pairs], 0)
            upload(page, [m for _, m in pairs], 1)
            page.get_by_role("button", name="Start evaluation").click()
            page.locator('[data-testid="stMetric"]').first.wait_for()
            wait_idle(page)
            shot("webapp_evaluation.png")
        for name, size in shots:
            print(f"{os.path.join(args.out, name)}: {size / 1024:.0f} KB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
