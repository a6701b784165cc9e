"""The lesionlab web app (Streamlit): single analysis and test-set evaluation for every lesionlab bundle.

Start it with ``lesionlab app [--host ADDR] [--port N] [--models DIR]`` or ``streamlit run <this file>``. The sidebar
picks the function (single analysis, test-set evaluation), the task and the model; what the app shows for a model
comes from its metadata (:mod:`lesionlab.apps.webapp.tasks`), so a bundle added later appears without a change here.

Settings (environment variables, set by ``lesionlab app`` from its options):

* ``LESIONLAB_APP_MODELS``: extra folders (separated by ``os.pathsep``) holding trained bundle folders or archives
  from ``lesionlab export``; ``LESIONLAB_APP_PROJECT_BUNDLES=0`` hides the project's own bundle folders.
* ``LESIONLAB_APP_PASSWORD``: when set, the app asks for this password first.
* ``LESIONLAB_APP_MAX_UPLOAD_MB``: largest accepted upload in MB (default: Streamlit's ``server.maxUploadSize``).
* ``LESIONLAB_APP_DEVICE``: ``cpu``, ``cuda`` or ``auto`` (default: ``auto``, the GPU when there is one).
"""

from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass

import streamlit as st

from lesionlab.apps.webapp.model import BundleModel, ModelEntry, find_models, train_hint
from lesionlab.apps.webapp.tasks import KIND_TITLES

__all__ = ["main", "AppSettings"]

FUNCTIONS = ("Single analysis", "Test-set evaluation")
logger = logging.getLogger("lesionlab.webapp")


@dataclass
class AppSettings:
    """The app's settings, read from the environment (see the module docstring)."""

    model_dirs: list[str]
    project_bundles: bool
    password: str | None
    max_upload_mb: float
    device: str

    @classmethod
    def from_env(cls) -> AppSettings:
        server_limit = float(st.get_option("server.maxUploadSize") or 200)
        limit = os.environ.get("LESIONLAB_APP_MAX_UPLOAD_MB")
        try:
            max_mb = min(float(limit), server_limit) if limit else server_limit
        except ValueError:
            max_mb = server_limit
        return cls(
            model_dirs=[d for d in os.environ.get("LESIONLAB_APP_MODELS", "").split(os.pathsep) if d],
            project_bundles=os.environ.get("LESIONLAB_APP_PROJECT_BUNDLES", "1") != "0",
            password=os.environ.get("LESIONLAB_APP_PASSWORD") or None,
            max_upload_mb=max_mb,
            device=os.environ.get("LESIONLAB_APP_DEVICE", "auto"),
        )


def _authorised(settings: AppSettings) -> bool:
    if not settings.password or st.session_state.get("authorised"):
        return True
    st.title("lesionlab analysis")
    with st.form("login"):
        given = st.text_input("Password", type="password", key="password")
        ok = st.form_submit_button("Sign in")
    if ok:
        if hmac.compare_digest(given.encode(), settings.password.encode()):
            st.session_state["authorised"] = True
            st.rerun()
        st.error("Wrong password.")
    return False


@st.cache_data(ttl=30, show_spinner=False)
def _models(dirs: tuple[str, ...], project: bool) -> list[ModelEntry]:
    return find_models(list(dirs), include_project=project)


def _weights_stamp(path: str) -> float:
    weights = os.path.join(path, "models", "model.pt")
    target = weights if os.path.isdir(path) else path
    return os.path.getmtime(target) if os.path.exists(target) else 0.0


@st.cache_resource(show_spinner="Loading the model (once per server process)...", max_entries=4)
def load_model(path: str, stamp: float, device: str, whole_slide: bool) -> BundleModel:
    """The bundle at ``path``, built once per process and weights file (``stamp`` is its modification time)."""
    from lesionlab.utils import get_device

    return BundleModel(path, device=str(get_device(device)), whole_slide=whole_slide)


def _sidebar(entries: list[ModelEntry]) -> tuple[str, ModelEntry | None]:
    sb = st.sidebar
    sb.title("lesionlab")
    function = sb.radio("Function", FUNCTIONS, key="function")
    usable = [e for e in entries if e.spec is not None]
    kinds = [k for k in KIND_TITLES if any(e.spec.kind == k for e in usable)]
    if not kinds:
        sb.error("No bundle found. Pass a folder of trained bundles or archives with `lesionlab app --models DIR`.")
        return function, None
    titles = {KIND_TITLES[k]: k for k in kinds}
    kind = titles[sb.selectbox("Task", list(titles), key="task")]
    choices = {e.label + ("" if e.trained else " (not trained)"): e for e in usable if e.spec.kind == kind}
    entry = choices.get(sb.selectbox("Model", list(choices), key="model"))
    if entry is not None:
        sb.caption(f"**{entry.spec.name}** {entry.spec.version}  \n{entry.spec.task}")
        if entry.spec.extra.get("intended_use"):
            sb.caption(f"Intended use: {entry.spec.extra['intended_use']}")
    broken = [e for e in entries if e.spec is None]
    if broken:
        with sb.expander(f"{len(broken)} bundle(s) could not be read"):
            for e in broken:
                st.write(f"`{e.label}`: {e.problem}")
    return function, entry


def main() -> None:
    """Render the app (called on every Streamlit rerun)."""
    st.set_page_config(page_title="lesionlab analysis", page_icon=":microscope:", layout="wide")
    settings = AppSettings.from_env()
    if not _authorised(settings):
        return
    function, entry = _sidebar(_models(tuple(settings.model_dirs), settings.project_bundles))
    st.title("lesionlab analysis")
    if entry is None:
        return
    if not entry.trained:
        st.warning(train_hint(entry.path))
        return
    from lesionlab.errors import LesionlabError

    try:
        model = load_model(entry.path, _weights_stamp(entry.path), settings.device, entry.spec.whole_slide)
    except LesionlabError as err:
        st.error(f"The model cannot be loaded: {err}")
        return
    try:
        if function == FUNCTIONS[0]:
            from lesionlab.apps.webapp.page_single import single_page

            single_page(model, settings.max_upload_mb)
        else:
            from lesionlab.apps.webapp.page_evaluate import evaluation_page

            evaluation_page(model, settings.max_upload_mb)
    except Exception as err:
        if type(err).__module__.startswith("streamlit.runtime"):  # st.rerun / st.stop control flow
            raise
        logger.exception("web app: unexpected error")
        st.error(f"Unexpected error ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
                 "The details are in the server's log.")
    st.caption("Research software, not for clinical use. Uploaded files stay on this server's temporary folder and "
               "are deleted after each analysis.")


if __name__ == "__main__":
    main()
