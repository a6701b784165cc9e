"""Atomic outputs: a writer SIGKILLed at random moments never leaves a truncated NIfTI or JSON behind."""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from lesionlab.data.writers import AtomicNibabelWriter, image_suffix

SHAPE = (96, 96, 64)  # 2.4 MB of random float32: gzip takes long enough to be killed in the middle

# One fresh interpreter imports MONAI once, then forks one writer process per output folder; the test SIGKILLs each
# writer at its own random moment, and the interpreter reports how every writer ended.
WRITER = f'''
import json, os, sys
import numpy as np
from lesionlab.data.writers import AtomicNibabelWriter
from lesionlab.utils import atomic_write_text

rng = np.random.default_rng(0)
vol = rng.random({SHAPE}).astype(np.float32)
payload = rng.random(200000).tolist()
affine = np.diag([1.0, 1.0, 2.0, 1.0])


def write_forever(out):
    i = 0
    while True:
        i += 1
        vol[0, 0, 0] = i  # every version differs; the rest is the same random volume
        w = AtomicNibabelWriter()
        w.set_data_array(vol, channel_dim=None)
        w.set_metadata({{"affine": affine, "original_affine": affine}}, resample=False)
        w.write(os.path.join(out, "case_lesion.nii.gz"))
        atomic_write_text(os.path.join(out, "report.json"), json.dumps({{"version": i, "payload": payload}}))


pids = []
for out in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            write_forever(out)
        finally:
            os._exit(3)
    pids.append(pid)
    print("pid", pid, flush=True)
for pid in pids:
    _, status = os.waitpid(pid, 0)
    print("status", pid, os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, flush=True)
'''


def _expected() -> tuple[np.ndarray, list]:
    rng = np.random.default_rng(0)
    return rng.random(SHAPE).astype(np.float32), rng.random(200000).tolist()


@pytest.mark.slow
def test_sigkill_at_random_moments_leaves_old_or_complete_files(tmp_path):
    vol, payload = _expected()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rnd = random.Random(5)
    delays = [rnd.uniform(0.0, 2.5) for _ in range(4)]
    outs = []
    for k in range(len(delays)):
        out = tmp_path / f"run{k}"
        out.mkdir()
        if k % 2:  # an older version already in place: it must survive a kill during any write
            nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.eye(4)), str(out / "case_lesion.nii.gz"))
            (out / "report.json").write_text(json.dumps({"version": 0, "payload": []}))
        outs.append(out)
    server = subprocess.Popen([sys.executable, str(script), *map(str, outs)], stdout=subprocess.PIPE, text=True)
    try:
        pids = []
        for _ in outs:
            line = server.stdout.readline().split()
            assert line[:1] == ["pid"], f"writer did not start: {line}"
            pids.append((int(line[1]), time.time()))
        for (pid, t0), delay in sorted(zip(pids, delays), key=lambda x: x[0][1] + x[1]):
            time.sleep(max(0.0, t0 + delay - time.time()))
            os.kill(pid, signal.SIGKILL)
        rest, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    status = {int(p): int(sig) for _, p, sig in (ln.split() for ln in rest.splitlines() if ln.startswith("status"))}
    assert all(status[pid] == signal.SIGKILL for pid, _ in pids), status

    versions = []
    for out in outs:
        nii, rep = out / "case_lesion.nii.gz", out / "report.json"
        if nii.exists():  # old or complete: the whole volume decompresses and matches
            data = np.asarray(nib.load(str(nii)).dataobj, dtype=np.float32)
            assert data.shape == SHAPE
            if not data.any():
                versions.append(0)
            else:
                np.testing.assert_array_equal(data.ravel()[1:], vol.ravel()[1:])
                versions.append(int(data[0, 0, 0]))
        if rep.exists():
            report = json.loads(rep.read_text())
            assert report["version"] == 0 or report["payload"] == payload
        # at most one orphan temporary file (the write that was killed), hidden and not matching the output glob
        orphans = [f for f in os.listdir(out) if f.startswith(".tmp-")]
        assert len(orphans) <= 1, orphans
        assert sorted(os.path.basename(f) for f in glob.glob(str(out / "*.nii.gz"))) == \
            (["case_lesion.nii.gz"] if nii.exists() else [])
        assert sorted(os.listdir(out)) == sorted(orphans + [f.name for f in (nii, rep) if f.exists()])
    assert any(v > 0 for v in versions)  # at least one writer completed a write before its kill


def test_save_imaged_with_atomic_writer(tmp_path):
    import torch
    from monai.data import MetaTensor
    from monai.transforms import SaveImaged

    affine = torch.diag(torch.tensor([1.0, 1.0, 2.0, 1.0]))
    affine[:3, 3] = torch.tensor([-24.0, -30.0, 5.0])
    img = MetaTensor(torch.randint(0, 2, (1, 8, 9, 5)).float(), affine=affine,
                     meta={"filename_or_obj": "/x/case7_t1w.nii.gz"})
    save = SaveImaged("pred", output_dir=str(tmp_path), output_postfix="lesion", output_ext=".nii.gz",
                      output_dtype=np.uint8, resample=False, separate_folder=False, print_log=False,
                      writer="lesionlab.data.writers.AtomicNibabelWriter")
    save({"pred": img})
    assert os.listdir(tmp_path) == ["case7_t1w_lesion.nii.gz"]
    out = nib.load(str(tmp_path / "case7_t1w_lesion.nii.gz"))
    assert out.get_data_dtype() == np.uint8 and out.shape == (8, 9, 5)
    np.testing.assert_allclose(out.affine, affine.numpy())
    np.testing.assert_array_equal(np.asarray(out.dataobj), img[0].numpy())
    assert oct(os.stat(tmp_path / "case7_t1w_lesion.nii.gz").st_mode & 0o044) != "0o0"  # not private like mkstemp's


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(target))
    before = target.read_bytes()

    def broken_save(img, filename):
        with open(filename, "wb") as f:
            f.write(b"\x1f\x8b partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    w = AtomicNibabelWriter()
    w.set_data_array(np.zeros((4, 4, 4), np.float32), channel_dim=None)
    w.set_metadata({"affine": np.eye(4)}, resample=False)
    with pytest.raises(OSError, match="disk full"):
        w.write(str(target))
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["a.nii.gz"]


@pytest.mark.parametrize("name,suffix", [("a.nii.gz", ".nii.gz"), ("b.NII.GZ", ".NII.GZ"), ("c.nii", ".nii"),
                                         ("d.mha", ".mha"), ("e", "")])
def test_image_suffix(name, suffix):
    assert image_suffix(os.path.join("x", name)) == suffix
