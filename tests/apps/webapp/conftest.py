"""Fixtures of the web-app tests: a folder of tiny bundles (2D tiles, whole slides, classification, volumes)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.apps.webapp.toy_bundles import make_crop_classifier, make_tile_bundle, make_volume_bundle

if importlib.util.find_spec("streamlit") is None:  # the app's pages need it (pip install 'lesionlab[app]')
    collect_ignore = ["test_app.py", "test_browser.py"]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("app_models")
    make_tile_bundle(str(root / "toy_tile"))
    make_tile_bundle(str(root / "toy_untrained"), trained=False)
    make_tile_bundle(str(root / "toy_wsi"), whole_slide=True)
    make_crop_classifier(str(root / "toy_crop"))
    make_volume_bundle(str(root / "toy_volume"))
    return str(root)


@pytest.fixture
def app_env(models_dir, monkeypatch, tmp_path):
    """Settings of an app that offers only the test bundles; temporary files go to a fresh folder."""
    import tempfile

    monkeypatch.setenv("LESIONLAB_APP_MODELS", models_dir)
    monkeypatch.setenv("LESIONLAB_APP_PROJECT_BUNDLES", "0")
    monkeypatch.setenv("LESIONLAB_APP_DEVICE", "cpu")
    monkeypatch.delenv("LESIONLAB_APP_PASSWORD", raising=False)
    monkeypatch.delenv("LESIONLAB_APP_MAX_UPLOAD_MB", raising=False)
    tmp = tmp_path / "server_tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return str(tmp)
