"""Dynamic renal scintigraphy (renogram) studies: read them as hospitals store them, write them as DICOM NM.

A renogram is a dynamic gamma-camera acquisition: a stack of count images (frames) with their acquisition times,
usually in several *phases* of different frame durations (e.g. 60 frames of 1 s, then 77 frames of 15 s). The
segmentation pipeline needs the frames *and* their timing (the first minute is dropped by acquisition time, not by
frame count), so every reader here returns a :class:`RenogramStudy` with both.

* :func:`read_renogram` opens

  - a DICOM NM multi-frame file (NM Image Storage; ``ImageType`` value 3 ``DYNAMIC``; frame timing from the
    ``PhaseInformationSequence``: ``PhaseDelay``, ``ActualFrameDuration``, ``NumberOfFramesInPhase``, and the
    ``PhaseVector`` / ``DetectorVector`` / ``EnergyWindowVector`` named by ``FrameIncrementPointer``),
  - a folder of single-frame DICOM files (one frame per file, ordered and timed by ``AcquisitionDate`` /
    ``AcquisitionTime``, durations from ``ActualFrameDuration``),
  - a plain image stack: ``.npz`` (``frames``, ``frame_start_s``, ``frame_duration_s``), or a multi-page TIFF or a
    folder of PNG/TIFF frames together with an explicit ``frame_seconds`` (such files carry no timing).

  Anything else gets a :class:`~lesionlab.errors.DataError` that names the file and says why it is not a dynamic
  renogram (e.g. a whole-body bone scan: ``ImageType`` ``WHOLE BODY``, one frame).
* :func:`write_nm_dynamic` writes frames as a real DICOM NM multi-frame dynamic file (used by the synthetic
  studies, :mod:`lesionlab.data.synthetic.renogram`); it lives in :mod:`lesionlab.data.nm_dicom`, next to the
  DICOM SEG writer of renogram predictions, and is re-exported here.

Orientation: frames are ``(frames, rows, columns)``; renograms are acquired from behind (posterior view), so the
patient's left kidney is on the image's left (low column index). :attr:`RenogramStudy.view` records the view when the
file says it.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lesionlab.data.dicom import _candidate_files, is_dicom_file
from lesionlab.data.nm_dicom import _DETECTOR, _ENERGY, _PHASE, NM_IMAGE_STORAGE, write_nm_dynamic
from lesionlab.errors import DataError

__all__ = ["RenogramStudy", "read_renogram", "find_renogram_studies", "write_nm_dynamic", "NM_IMAGE_STORAGE"]

logger = logging.getLogger(__name__)

_PLAIN_SUFFIXES = (".png", ".tif", ".tiff")


@dataclass
class RenogramStudy:
    """Frames of one dynamic renogram and their timing.

    Attributes:
        frames: counts, ``(n_frames, rows, columns)`` float32, in acquisition order.
        frame_start_s: start of each frame in seconds after the start of the acquisition.
        frame_duration_s: duration of each frame in seconds.
        source: the file or folder read.
        pixel_spacing: (row spacing, column spacing) in mm, ``(1, 1)`` when unknown.
        patient_id, study_instance_uid, series_instance_uid: identifiers (empty when unknown).
        view: ``"POSTERIOR"``, ``"ANTERIOR"`` or ``""`` (unknown).
        phases: ``[{"n_frames", "frame_duration_s", "delay_s"}]`` as read (one entry for plain stacks).
        frame_numbers: 1-based number of each frame in the source (the NM file's frame numbers, which differ from
            ``1..n_frames`` when a detector or energy window was chosen; ``1..n_frames`` otherwise).
    """

    frames: np.ndarray
    frame_start_s: np.ndarray
    frame_duration_s: np.ndarray
    source: str
    pixel_spacing: tuple[float, float] = (1.0, 1.0)
    patient_id: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    view: str = ""
    phases: list[dict] = field(default_factory=list)
    frame_numbers: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.frames.shape[0]
        if self.frame_numbers is None:
            self.frame_numbers = np.arange(1, n + 1)
        if self.frames.ndim != 3 or len(self.frame_start_s) != n or len(self.frame_duration_s) != n:
            raise DataError(self.source, f"frames {self.frames.shape} and timing ({len(self.frame_start_s)} starts, "
                                         f"{len(self.frame_duration_s)} durations) do not match")
        if n > 1 and np.any(np.diff(self.frame_start_s) <= 0):
            raise DataError(self.source, "frame start times are not increasing; the frames are not a time series")

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    def meta(self) -> dict:
        """Metadata of the study for a MetaTensor (timing as lists, plain types only)."""
        return {
            "filename_or_obj": self.source,
            "frame_start_s": [float(v) for v in self.frame_start_s],
            "frame_duration_s": [float(v) for v in self.frame_duration_s],
            "pixel_spacing": [float(v) for v in self.pixel_spacing],
            "patient_id": self.patient_id,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid,
            "view": self.view,
        }


def read_renogram(path: str | os.PathLike, detector: int | None = None, energy_window: int = 1,
                  frame_seconds: float | Sequence[float] | None = None) -> RenogramStudy:
    """Read a dynamic renogram from a DICOM NM multi-frame file, a folder of DICOM frames, or a plain image stack.

    Args:
        path: the file or folder.
        detector: detector (1-based) of a multi-detector NM file; by default the only one, or the one whose view is
            posterior (renograms are read from behind). Several detectors without a posterior one is an error that
            asks for this argument.
        energy_window: energy window (1-based) of a multi-window NM file.
        frame_seconds: frame duration(s) in seconds of a TIFF / PNG stack (one value for all frames or one per
            frame); such files carry no timing, so it is required for them and ignored otherwise.

    Raises:
        DataError: naming the file, when it is missing, unreadable, not NM, not dynamic (static or whole-body
            image), has no frame timing, or is inconsistent.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        raise DataError(path, "no such file or folder")
    if os.path.isdir(path):
        dicoms = _candidate_files(path)
        if dicoms:
            if len(dicoms) == 1:
                return _read_nm_file(dicoms[0], detector, energy_window)
            return _read_dicom_frames(path, dicoms)
        images = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(_PLAIN_SUFFIXES))
        if not images:
            raise DataError(path, "folder holds neither DICOM files nor PNG/TIFF frames")
        return _read_plain(path, images, frame_seconds)
    if os.path.getsize(path) == 0:
        raise DataError(path, "zero-byte file (empty)")
    lower = path.lower()
    if lower.endswith(".npz"):
        return _read_npz(path)
    if lower.endswith((".tif", ".tiff")):
        return _read_plain(path, [path], frame_seconds)
    if is_dicom_file(path):
        return _read_nm_file(path, detector, energy_window)
    raise DataError(path, "not a renogram file: expected DICOM NM, .npz, a TIFF stack or a folder of frames")


def find_renogram_studies(path: str | os.PathLike) -> list[str]:
    """The renogram inputs under ``path``, each a path :func:`read_renogram` takes.

    A file is one study. In a folder tree, every folder with DICOM files contributes: its multi-frame files one study
    each, or, when its DICOM files are single frames, the folder itself (a folder of frames). ``.npz`` files are
    studies too. Sorted; nothing is read beyond the DICOM headers.

    Raises:
        DataError: when ``path`` does not exist or holds no study.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(path, "no such file or folder")
    found = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        dicoms = _candidate_files(folder)
        multi = [f for f in dicoms if int(_dcmread(f, pixels=False).get("NumberOfFrames", 1) or 1) > 1]
        found += multi
        if len(dicoms) > len(multi) + 1:
            found.append(folder)
        elif len(dicoms) == len(multi) + 1 and not multi:
            found += dicoms
        found += [os.path.join(folder, f) for f in sorted(files) if f.lower().endswith(".npz")]
    if not found:
        raise DataError(path, "no renogram study found (DICOM NM files, folders of DICOM frames or .npz stacks)")
    return sorted(found)


def _dcmread(path: str, pixels: bool = True):
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except Exception as err:
        raise DataError(path, f"not a readable DICOM file ({str(err).strip()[:200] or type(err).__name__})") from err


def _pixels(ds, path: str) -> np.ndarray:
    try:
        arr = np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as err:
        raise DataError(path, f"pixel data cannot be decoded ({str(err).strip()[:200] or type(err).__name__})") from err
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return arr * slope + intercept


def _spacing(ds) -> tuple[float, float]:
    ps = ds.get("PixelSpacing")
    return (float(ps[0]), float(ps[1])) if ps is not None and len(ps) == 2 else (1.0, 1.0)


def _not_dynamic(ds, path: str) -> str | None:
    """Why ``ds`` is not a dynamic NM acquisition, or ``None``."""
    modality = str(ds.get("Modality", "")).upper()
    if modality != "NM":
        return f"modality is {modality or 'missing'}, not NM (nuclear medicine); a renogram is a dynamic NM study"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    kind = image_type[2] if len(image_type) > 2 else ""
    if kind and kind != "DYNAMIC":
        what = {"WHOLE BODY": "a whole-body scan (e.g. a bone scan)", "STATIC": "a static image",
                "TOMO": "a SPECT acquisition", "GATED": "a gated (cardiac) acquisition"}.get(kind, f"a {kind} image")
        return (f"ImageType is {'/'.join(image_type)}: {what}, not a dynamic renogram (ImageType value 3 must be "
                "DYNAMIC, with frame timing in the PhaseInformationSequence)")
    if "PhaseInformationSequence" not in ds:
        n = int(ds.get("NumberOfFrames", 1) or 1)
        return (f"no PhaseInformationSequence (frame timing) in this NM file ({n} frame(s), ImageType "
                f"{'/'.join(image_type) or 'missing'}); a dynamic renogram needs frame durations")
    return None


def _vector(ds, tag: int, n_frames: int, path: str) -> np.ndarray:
    if tag in ds:
        v = np.asarray([int(x) for x in np.atleast_1d(ds[tag].value)])
        if v.size != n_frames:
            raise DataError(path, f"{ds[tag].keyword} has {v.size} values for {n_frames} frames")
        return v
    return np.ones(n_frames, dtype=int)


def _pick_detector(ds, detectors: np.ndarray, detector: int | None, path: str) -> int:
    found = sorted({int(d) for d in detectors})
    if detector is not None:
        if detector not in found:
            raise DataError(path, f"no detector {detector}; detectors in this file: {found}")
        return detector
    if len(found) == 1:
        return found[0]
    views = {}
    for i, item in enumerate(ds.get("DetectorInformationSequence") or [], start=1):
        codes = item.get("ViewCodeSequence") or []
        views[i] = str(codes[0].get("CodeMeaning", "")).upper() if codes else ""
    posterior = [d for d in found if "POSTERIOR" in views.get(d, "")]
    if len(posterior) == 1:
        logger.info("%s: %d detectors, reading detector %d (posterior view)", path, len(found), posterior[0])
        return posterior[0]
    raise DataError(path, f"{len(found)} detectors {found} and no single posterior view; choose one with detector=")


def _read_nm_file(path: str, detector: int | None, energy_window: int) -> RenogramStudy:
    ds = _dcmread(path, pixels=False)
    problem = _not_dynamic(ds, path)
    if problem:
        raise DataError(path, problem)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    phases = list(ds.PhaseInformationSequence)
    phase_vec = _vector(ds, _PHASE, n, path)
    det_vec = _vector(ds, _DETECTOR, n, path)
    win_vec = _vector(ds, _ENERGY, n, path)
    det = _pick_detector(ds, det_vec, detector, path)
    if energy_window not in set(win_vec.tolist()):
        windows = sorted(set(win_vec.tolist()))
        raise DataError(path, f"no energy window {energy_window}; windows in this file: {windows}")
    keep = (det_vec == det) & (win_vec == energy_window)
    # start time of each phase: the previous phases' frames and pauses plus this phase's delay (all in ms)
    info, t = [], 0.0
    for k, ph in enumerate(phases, start=1):
        try:
            dur = float(ph.ActualFrameDuration)
            count = int(ph.NumberOfFramesInPhase)
        except (AttributeError, TypeError, ValueError) as err:
            raise DataError(path, f"phase {k} of the PhaseInformationSequence has no ActualFrameDuration or "
                                  "NumberOfFramesInPhase") from err
        if dur <= 0 or count <= 0:
            raise DataError(path, f"phase {k}: frame duration {dur} ms and {count} frames; both must be positive")
        delay, pause = float(ph.get("PhaseDelay", 0) or 0), float(ph.get("PauseBetweenFrames", 0) or 0)
        info.append({"start_ms": t + delay, "dur_ms": dur, "pause_ms": pause, "n": count})
        t += delay + count * dur + (count - 1) * pause
    if phase_vec.max() > len(info) or phase_vec.min() < 1:
        raise DataError(path, f"PhaseVector refers to phase {int(phase_vec.max())} but {len(info)} phase(s) are "
                              "described")
    starts, durs, index_in_phase = [], [], {}
    for p in phase_vec[keep]:
        j = index_in_phase.get(p, 0)
        index_in_phase[p] = j + 1
        ph = info[p - 1]
        if j >= ph["n"]:
            raise DataError(path, f"phase {p} holds more frames than its NumberOfFramesInPhase ({ph['n']})")
        starts.append((ph["start_ms"] + j * (ph["dur_ms"] + ph["pause_ms"])) / 1000.0)
        durs.append(ph["dur_ms"] / 1000.0)
    if len(starts) < 2:
        raise DataError(path, f"only {len(starts)} frame(s) for detector {det}; a renogram is a time series")
    full = _dcmread(path)
    pixels = _pixels(full, path)
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.shape[0] != n:
        raise DataError(path, f"pixel data holds {pixels.shape[0]} frames, NumberOfFrames says {n}")
    views = [str((it.get("ViewCodeSequence") or [{}])[0].get("CodeMeaning", "")).upper()
             for it in (ds.get("DetectorInformationSequence") or [])]
    view = views[det - 1] if det - 1 < len(views) else ""
    order = np.argsort(np.asarray(starts), kind="stable")
    return RenogramStudy(
        frames=pixels[keep][order], frame_start_s=np.asarray(starts)[order], frame_duration_s=np.asarray(durs)[order],
        source=path, pixel_spacing=_spacing(ds), patient_id=str(ds.get("PatientID", "")),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        view="POSTERIOR" if "POSTERIOR" in view else "ANTERIOR" if "ANTERIOR" in view else "",
        phases=[{"n_frames": p["n"], "frame_duration_s": p["dur_ms"] / 1000.0, "delay_s": p["start_ms"] / 1000.0}
                for p in info], frame_numbers=(np.flatnonzero(keep) + 1)[order],
    )


def _acq_seconds(ds, path: str) -> float:
    date = str(ds.get("AcquisitionDate") or ds.get("ContentDate") or "19700101")
    time = str(ds.get("AcquisitionTime") or ds.get("ContentTime") or "")
    if not time:
        raise DataError(path, "no AcquisitionTime (or ContentTime): the frame cannot be placed in time")
    try:
        hh, mm = int(time[0:2]), int(time[2:4]) if len(time) >= 4 else 0
        ss = float(time[4:]) if len(time) > 4 else 0.0
        day = datetime.datetime.strptime(date[:8], "%Y%m%d")
    except ValueError as err:
        raise DataError(path, f"unreadable acquisition date/time {date!r} {time!r}") from err
    return (day - datetime.datetime(1970, 1, 1)).total_seconds() + 3600 * hh + 60 * mm + ss


def _read_dicom_frames(folder: str, files: list[str]) -> RenogramStudy:
    headers = [_dcmread(f, pixels=False) for f in files]
    for f, h in zip(files, headers):
        modality = str(h.get("Modality", "")).upper()
        if modality != "NM":
            raise DataError(f, f"modality is {modality or 'missing'}, not NM; a folder of renogram frames holds NM "
                               "images only")
        if int(h.get("NumberOfFrames", 1) or 1) > 1:
            raise DataError(f, "multi-frame file in a folder of frames: read the multi-frame file on its own")
    series = {str(h.get("SeriesInstanceUID", "")) for h in headers}
    if len(series) > 1:
        raise DataError(folder, f"{len(series)} series in one folder; put each renogram in its own folder")
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(sizes) > 1:
        raise DataError(folder, f"frames of different sizes {sorted(sizes)}")
    times = np.asarray([_acq_seconds(h, f) for f, h in zip(files, headers)])
    durs = []
    for f, h in zip(files, headers):
        if h.get("ActualFrameDuration") in (None, ""):
            raise DataError(f, "no ActualFrameDuration: the frame's length in time is unknown")
        durs.append(float(h.ActualFrameDuration) / 1000.0)
    order = np.argsort(times, kind="stable")
    if np.any(np.diff(times[order]) <= 0):
        raise DataError(folder, "two frames share one acquisition time (duplicate files?)")
    frames = np.stack([_pixels(_dcmread(files[i]), files[i]) for i in order])
    h = headers[order[0]]
    return RenogramStudy(
        frames=frames, frame_start_s=times[order] - times[order[0]], frame_duration_s=np.asarray(durs)[order],
        source=folder, pixel_spacing=_spacing(h), patient_id=str(h.get("PatientID", "")),
        study_instance_uid=str(h.get("StudyInstanceUID", "")), series_instance_uid=str(h.get("SeriesInstanceUID", "")),
        phases=[{"n_frames": len(files), "frame_duration_s": float(np.median(durs)), "delay_s": 0.0}],
    )


def _durations(path: str, n: int, frame_seconds: float | Sequence[float] | None) -> np.ndarray:
    if frame_seconds is None:
        raise DataError(path, "a TIFF/PNG stack carries no frame timing; give frame_seconds (one value or one per "
                              "frame), or convert the study to .npz with frame_start_s and frame_duration_s")
    d = np.broadcast_to(np.asarray(frame_seconds, dtype=float), (n,)) if np.ndim(frame_seconds) == 0 \
        else np.asarray(frame_seconds, dtype=float)
    if d.shape != (n,) or np.any(d <= 0):
        raise DataError(path, f"frame_seconds must be positive, one value or {n} values; got {np.shape(d)}")
    return d


def _read_plain(path: str, images: list[str], frame_seconds) -> RenogramStudy:
    from PIL import Image, UnidentifiedImageError

    frames = []
    for f in images:
        try:
            with Image.open(f) as im:
                for k in range(getattr(im, "n_frames", 1)):
                    im.seek(k)
                    frames.append(np.asarray(im, dtype=np.float32))
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f, f"not a readable image ({err})") from err
    if len({fr.shape for fr in frames}) > 1 or frames[0].ndim != 2:
        raise DataError(path, "frames must be single-channel images of one size")
    durs = _durations(path, len(frames), frame_seconds)
    starts = np.concatenate([[0.0], np.cumsum(durs)[:-1]])
    return RenogramStudy(np.stack(frames), starts, durs, path,
                         phases=[{"n_frames": len(frames), "frame_duration_s": float(durs[0]), "delay_s": 0.0}])


def _read_npz(path: str) -> RenogramStudy:
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
    except Exception as err:
        raise DataError(path, f"not a readable .npz archive ({err})") from err
    missing = [k for k in ("frames", "frame_start_s", "frame_duration_s") if k not in data]
    if missing:
        raise DataError(path, f".npz renogram lacks {missing} (needs frames, frame_start_s, frame_duration_s)")
    spacing = tuple(float(v) for v in data.get("pixel_spacing", (1.0, 1.0)))
    return RenogramStudy(data["frames"].astype(np.float32), data["frame_start_s"].astype(float),
                         data["frame_duration_s"].astype(float), path, pixel_spacing=spacing)

