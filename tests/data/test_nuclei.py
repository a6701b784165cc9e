"""Synthetic CoNIC/MoNuSAC files written and read back, class shares (Tables 4.1/4.2), bad input, splits."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lesionlab.data.nuclei import (
    NucleiDataset,
    conic_items,
    find_monusac,
    iter_nuclei_labels,
    open_conic,
    rasterize_monusac_xml,
    read_conic_patch,
    read_monusac_image,
    read_nuclei_item,
)
from lesionlab.data.synthetic import synth_conic, synth_monusac
from lesionlab.data.synthetic.nuclei import CONIC_SHARES, MONUSAC_SHARES
from lesionlab.errors import DataError
from lesionlab.pipelines.class_weights import pixel_counts, shares_from_counts
from lesionlab.pipelines.nuclei_data import nuclei_class_shares, nuclei_split


@pytest.fixture(scope="module")
def conic(tmp_path_factory):
    return synth_conic(tmp_path_factory.mktemp("conic"), n=20, seed=3, progress=False)


@pytest.fixture(scope="module")
def monusac(tmp_path_factory):
    return synth_monusac(tmp_path_factory.mktemp("monusac"), patients=3, images_per_patient=2, seed=3, progress=False)


def test_conic_format_and_table_4_1_shares(conic):
    images, labels = np.load(os.path.join(conic, "images.npy")), np.load(os.path.join(conic, "labels.npy"))
    assert images.dtype == np.uint8 and images.shape == (20, 256, 256, 3)
    assert labels.shape == (20, 256, 256, 2) and labels.dtype.kind == "i"
    shares = shares_from_counts(np.bincount(labels[..., 1].ravel(), minlength=7))
    np.testing.assert_allclose(shares, CONIC_SHARES, rtol=0.2)
    # instance ids: one id per nucleus, each nucleus of one class
    inst, cls = labels[0, ..., 0], labels[0, ..., 1]
    for i in np.unique(inst)[1:]:
        assert len(np.unique(cls[inst == i])) == 1 and cls[inst == i][0] > 0
    assert "NOT FOR CLINICAL USE" in open(os.path.join(conic, "README.txt")).read()


def test_conic_reader_orientation_and_dataset(conic):
    img, cls, inst = read_conic_patch(conic, 2)
    raw = np.load(os.path.join(conic, "images.npy"), mmap_mode="r")[2]
    assert img.shape == (3, 256, 256) and np.array_equal(img[:, 10, 20], raw[20, 10])  # (C, x, y)
    ds = NucleiDataset(conic_items(conic), binary=True)
    s = ds[2]
    assert s["image"].dtype == np.float32 and s["image"].max() <= 1.0
    assert set(np.unique(s["label"])) <= {0, 1} and np.array_equal(s["label"] > 0, cls > 0)


def test_monusac_files_read_back_and_table_4_2_shares(monusac):
    items = find_monusac(monusac)
    assert len(items) == 6 and all(it["image"].endswith(".tif") for it in items)
    assert len({it["subject"] for it in items}) == 3
    raw = read_monusac_image(items[0]["image"])
    mask = rasterize_monusac_xml(items[0]["annotation"], raw.shape[:2])
    # painted nuclei are darker than the pink background
    assert raw[mask > 0].mean() < raw[mask == 0].mean() - 30
    img, lab = read_nuclei_item(items[0])
    assert img.shape == (3, 512, 512) and lab.shape == (1, 512, 512)
    assert set(np.unique(lab)) <= set(range(5))
    shares = shares_from_counts(pixel_counts(iter_nuclei_labels(items, None), 5))
    np.testing.assert_allclose(shares, MONUSAC_SHARES, rtol=0.2)


def test_split_seeded_and_grouped(conic, monusac):
    train, test = nuclei_split(conic, "conic", "train"), nuclei_split(conic, "conic", "test")
    assert len(test) == 2 and len(train) == 18
    assert nuclei_split(conic, "conic", "test") == test
    g_test = nuclei_split(conic, "conic", "test", group=True, test_fraction=0.2)
    g_train = nuclei_split(conic, "conic", "train", group=True, test_fraction=0.2)
    assert not {t["subject"] for t in g_test} & {t["subject"] for t in g_train}
    m_test = nuclei_split(monusac, "monusac", "test", group=True, test_fraction=0.34)
    assert len({t["subject"] for t in m_test}) == 1 and len(m_test) == 2


def test_class_shares_cached(conic, tmp_path):
    items = nuclei_split(conic, "conic", "train")
    cache = str(tmp_path / "shares.json")
    a = nuclei_class_shares(items, "conic", cache)
    assert os.path.isfile(cache) and nuclei_class_shares(items, "conic", cache) == a
    assert abs(sum(a) - 1) < 1e-9


# ---------------------------------------------------------------- bad input


def _conic_copy(conic, tmp_path, images=None, labels=None):
    out = tmp_path / "bad"
    out.mkdir()
    np.save(out / "images.npy", np.load(os.path.join(conic, "images.npy"))[:3] if images is None else images)
    np.save(out / "labels.npy", np.load(os.path.join(conic, "labels.npy"))[:3] if labels is None else labels)
    return str(out)


@pytest.mark.parametrize("images,labels,match", [
    (np.zeros((2, 8, 8, 3), np.float32), None, r"images\.npy: expected uint8"),
    (np.zeros((2, 8, 8), np.uint8), None, r"images\.npy: expected uint8"),
    (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 1), np.int32), r"labels\.npy: expected integer"),
    (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 2), np.float32), r"labels\.npy: expected integer"),
    (np.zeros((2, 8, 8, 3), np.uint8), np.zeros((3, 8, 8, 2), np.int32), r"labels\.npy: shape"),
])
def test_conic_bad_arrays(conic, tmp_path, images, labels, match):
    root = _conic_copy(conic, tmp_path, images, labels if labels is not None else np.zeros((2, 8, 8, 2), np.int32))
    with pytest.raises(DataError, match=match):
        open_conic(root)


def test_conic_class_out_of_range_names_item(conic, tmp_path):
    labels = np.load(os.path.join(conic, "labels.npy"))[:3].copy()
    labels[1, 5, 5, 1] = 9
    root = _conic_copy(conic, tmp_path, labels=labels)
    read_conic_patch(root, 0)
    with pytest.raises(DataError, match=r"labels\.npy: item 1: class ids must be 0-6"):
        read_conic_patch(root, 1)
    with pytest.raises(DataError, match="item 7: out of range"):
        read_conic_patch(root, 7)


def test_conic_missing_and_garbage(tmp_path):
    with pytest.raises(DataError, match="images.npy: file not found"):
        open_conic(str(tmp_path))
    (tmp_path / "images.npy").write_bytes(b"not numpy")
    (tmp_path / "labels.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="images.npy: not a readable .npy"):
        open_conic(str(tmp_path))


_XML = """<Annotations><Annotation Id="1"><Attributes><Attribute Name="{name}" Id="0"/></Attributes><Regions>
<Region Id="4"><Vertices>{verts}</Vertices></Region></Regions></Annotation></Annotations>"""
_TRI = '<Vertex X="1" Y="1"/><Vertex X="8" Y="1"/><Vertex X="4" Y="8"/>'


@pytest.mark.parametrize("text,match", [
    (_XML.format(name="Mast cell", verts=_TRI), "annotation 1: unknown class name 'Mast cell'"),
    (_XML.format(name="Lymphocyte", verts='<Vertex X="1" Y="1"/><Vertex X="8" Y="1"/>'),
     "annotation 1 region 4: broken polygon"),
    (_XML.format(name="Lymphocyte", verts='<Vertex X="a" Y="1"/>' + _TRI), "region 4: vertex without numeric"),
    (_XML.format(name="Lymphocyte", verts='<Vertex X="nan" Y="1"/>' + _TRI), "region 4: broken polygon"),
    ("<Annotations><Annotation>", "not readable XML"),
])
def test_monusac_bad_xml(tmp_path, text, match):
    path = tmp_path / "a.xml"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as err:
        rasterize_monusac_xml(str(path), (10, 10))
    assert str(path) in str(err.value)


def test_monusac_good_xml_by_hand(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(_XML.format(name="Neutrophil", verts=_TRI))
    mask = rasterize_monusac_xml(str(path), (10, 10))
    assert set(np.unique(mask)) == {0, 3} and mask[3, 4] == 3 and mask[9, 9] == 0


def test_monusac_missing_xml_and_bad_tif(monusac, tmp_path):
    folder = tmp_path / "P1"
    folder.mkdir()
    (folder / "x.tif").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no matching .xml"):
        find_monusac(str(tmp_path))
    with pytest.raises(DataError, match="unreadable image"):
        read_monusac_image(str(folder / "x.tif"))
    with pytest.raises(DataError, match="no patient folders"):
        find_monusac(str(tmp_path / "P1"))
