"""Build a set of bad (and a few good) hospital inputs and run each through ``lesionlab infer`` and through the
bundle's own ``inference.json`` run; print the table of docs/hospital_input.md (case, exit code, message).

Usage::

    python tools/bad_input_table.py ARCHIVE_OR_BUNDLE WORKDIR

The good cases are the MNI152 template with a synthetic lesion (on the model grid, and moved onto a rotated,
anisotropic native grid). Each case is run separately (one ``lesionlab infer`` call, one bundle run), so every row
has its own exit code; the bundle run also gets all cases at once to show that it lists the bad ones and goes on.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import sys
import tempfile

import nibabel as nib
import numpy as np


def _template_head() -> tuple[np.ndarray, np.ndarray]:
    from nilearn import datasets

    img = datasets.load_mni152_template(resolution=1)
    data = np.asarray(img.get_fdata(dtype=np.float32)) * 1000.0
    ijk = np.indices(data.shape, dtype=np.float32)
    centre = np.linalg.inv(img.affine) @ np.array([28.0, -20.0, 18.0, 1.0])
    r = sum(((ijk[a] - centre[a]) / s) ** 2 for a, s in zip(range(3), (9.0, 13.0, 8.0)))
    data[r <= 1.0] = 150.0  # a T1-hypointense lesion
    return data, np.asarray(img.affine)


def _save(data, affine, path, **header) -> str:
    img = nib.Nifti1Image(data, affine)
    for k, v in header.items():
        img.header[k] = v
    nib.save(img, path)
    return path


def make_cases(folder: str) -> dict[str, str]:
    """Write the cases; return ``{case name: path}``."""
    from lesionlab.data.synthetic.dicom_series import synth_dicom_series
    from lesionlab.transforms.registration import resample

    os.makedirs(folder, exist_ok=True)
    head, aff = _template_head()
    cases: dict[str, str] = {}

    def p(name: str) -> str:
        return os.path.join(folder, name)

    cases["good: MNI-space T1 (model grid)"] = _save(head, aff, p("mni_t1.nii.gz"))
    rot = np.eye(4)
    c, s = np.cos(np.deg2rad(14)), np.sin(np.deg2rad(14))
    rot[:3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    rot[:3, 3] = [8, -6, 5]
    naff = np.diag([0.9, 0.9, 4.0, 1.0])
    naff[:3, 3] = [-110, -140, -80]
    native = resample(head[None], aff, (245, 290, 52), naff, rot, order=1)[0]
    cases["good: native-space T1 (rotated 14 deg, 0.9x0.9x4 mm)"] = _save(native, naff, p("native_t1.nii.gz"))
    open(p("zero.nii.gz"), "wb").close()
    cases["zero-byte file"] = p("zero.nii.gz")
    with open(p("text.nii.gz"), "w") as f:
        f.write("<html>not an image</html>\n")
    cases["text file named .nii.gz"] = p("text.nii.gz")
    raw = open(cases["good: MNI-space T1 (model grid)"], "rb").read()
    with open(p("truncated.nii.gz"), "wb") as f:
        f.write(raw[: len(raw) // 2])
    cases["truncated gzip"] = p("truncated.nii.gz")
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((1300, 1300, 1300))
    hdr.set_data_dtype(np.float32)
    hdr.set_qform(np.eye(4), 1)
    with gzip.open(p("huge_header.nii.gz"), "wb") as f:
        f.write(hdr.binaryblock + b"\0" * 4 + b"\0" * 1000)
    cases["1.4 KB file declaring 1300^3 voxels"] = p("huge_header.nii.gz")
    zero = nib.Nifti1Image(head[::2, ::2, ::2].copy(), np.diag([2.0, 2.0, 2.0, 1.0]))
    zero.header.set_zooms((0.0, 2.0, 2.0))
    nib.save(zero, p("zero_spacing.nii.gz"))
    cases["zero voxel spacing"] = p("zero_spacing.nii.gz")
    nohdr = nib.Nifti1Image(head, None)
    nohdr.header.set_qform(None, 0)
    nohdr.header.set_sform(None, 0)
    nib.save(nohdr, p("no_orientation.nii.gz"))
    cases["no orientation (qform/sform codes 0)"] = p("no_orientation.nii.gz")
    nan = head.copy()
    nan[90:100, 100:110, 80:90] = np.nan
    cases["NaN voxels"] = _save(nan, aff, p("nan.nii.gz"))
    cases["constant image"] = _save(np.full((60, 60, 40), 7.0, np.float32), np.diag([3.0, 3, 3, 1]), p("flat.nii.gz"))
    cases["4D series (3 volumes)"] = _save(np.stack([head[::2, ::2, ::2]] * 3, -1), np.diag([2.0, 2, 2, 1]),
                                          p("series4d.nii.gz"))
    cases["2D image"] = _save(head[:, :, 90].copy(), aff, p("slice2d.nii.gz"))
    noise = np.random.default_rng(0).random((80, 90, 70)).astype(np.float32)
    noise_aff = np.diag([2.4, 2.4, 2.4, 1.0])
    noise_aff[:3, 3] = [-96, -110, -80]
    cases["noise volume, not a head (registration)"] = _save(noise, noise_aff, p("noise.nii.gz"))
    slab_aff = aff.copy()
    slab_aff[:3, 3] = (aff @ np.array([0, 0, 80, 1.0]))[:3]
    cases["24 mm slab (registration coverage)"] = _save(head[:, :, 80:104].copy(), slab_aff, p("slab.nii.gz"))
    s = synth_dicom_series(p("dicom_nospacing"), n_slices=16, size=48, seed=1)
    import pydicom

    for f in s.files:
        ds = pydicom.dcmread(f)
        del ds.PixelSpacing
        ds.save_as(f)
    cases["DICOM series without PixelSpacing"] = s.folder
    s = synth_dicom_series(p("dicom_damaged"), n_slices=16, size=48, seed=2)
    with open(s.files[5], "r+b") as f:
        f.truncate(400)
    cases["DICOM series with a truncated slice"] = s.folder
    return cases


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return (lines[-1] if lines else "").replace("|", "/")[:230]


def run_infer(bundle: str, path: str, out: str) -> tuple[int, str]:
    from lesionlab.apps.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["infer", bundle, "--input", path, "--output", out])
        except SystemExit as e:
            code = int(e.code or 0)
        except Exception as e:  # noqa: BLE001 - recorded
            return 2, f"{type(e).__name__}: {e}"
    summary = os.path.join(out, "summary.json")
    if os.path.exists(summary):
        cases = json.load(open(summary))["cases"]
        msg = "; ".join(c["error"] or f"segmented, {c['lesion_volume_ml']:.1f} mL" for c in cases)
        return code, msg
    return code, err.getvalue()


def run_bundle_inference(root: str, paths: list[str], out: str) -> tuple[int, str]:
    from monai.bundle import run

    try:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            run("run", config_file=os.path.join(root, "configs", "inference.json"),
                meta_file=os.path.join(root, "configs", "metadata.json"), logging_file=False, bundle_root=root,
                datalist=paths, output_dir=out, device="cpu")
    except Exception as e:  # noqa: BLE001 - the outcome
        cause, seen = e, set()
        from lesionlab.errors import LesionlabError

        while cause is not None and id(cause) not in seen and not isinstance(cause, LesionlabError):
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        return 1, _one_line(cause if cause is not None else e)
    written = [f for f in os.listdir(out) if f.endswith(".nii.gz")] if os.path.isdir(out) else []
    return 0, f"segmented ({len(written)} file written)"


def main() -> int:
    from lesionlab.apps.deploy import open_bundle

    bundle, work = sys.argv[1], sys.argv[2]
    skip_good = "--bad-only" in sys.argv[3:]  # whole-volume CPU inference takes minutes per good case
    cases = make_cases(os.path.join(work, "inputs"))
    if skip_good:
        cases = {k: v for k, v in cases.items() if not k.startswith("good")}
    rows = []
    with open_bundle(bundle) as src:
        root = src.root
        for i, (name, path) in enumerate(cases.items()):
            ic, im = run_infer(bundle, path, os.path.join(work, "infer", str(i)))
            bc, bm = run_bundle_inference(root, [path], os.path.join(work, "bundle", str(i)))
            rows.append((name, os.path.basename(path), ic, im, bc, bm))
            print(f"| {name} | `{os.path.basename(path)}` | {ic} | {im} | {bc} | {bm} |", flush=True)
        files = [p for p in cases.values() if os.path.isfile(p)]
        code, msg = run_bundle_inference(root, files, os.path.join(work, "bundle", "all"))
        print(f"\nbundle run on all {len(files)} files at once: exit {code}: {msg}")
    json.dump(rows, open(os.path.join(work, "table.json"), "w"), indent=1)
    return 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        sys.exit(main())
