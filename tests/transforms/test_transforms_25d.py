"""2.5D transforms: neighbour stacking (borders, order), in-plane crop/resize and its inverse, sampling, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd

from lesionlab.transforms import (
    InPlaneCropResize,
    InPlaneCropResized,
    MergeMasks,
    MergeMasksd,
    NeighbourSliceStack,
    NeighbourSliceStackd,
    RandSlice25D,
    RandSlice25Dd,
)


def _volume(depth: int = 5) -> np.ndarray:
    # slice z holds the constant value z + 1, so each stack channel tells which slice it came from
    vol = np.zeros((1, 3, 4, depth), dtype=np.float32)
    for z in range(depth):
        vol[..., z] = z + 1
    return vol


@pytest.mark.parametrize("as_tensor", [False, True])
def test_stack_order_and_zero_borders(as_tensor):
    vol = _volume(5)
    img = torch.as_tensor(vol) if as_tensor else vol
    st = NeighbourSliceStack()(img)
    assert st.shape == (4, 3, 4, 5)
    assert type(st) is type(img)
    got = np.asarray(st)[:, 0, 0, :]  # (channel, slice)
    # channel k of slice i is slice i + (-2, -1, 0, 1)[k] (value index + 1), zero outside the volume
    expected = np.array([[0, 0, 1, 2, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [2, 3, 4, 5, 0]], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)


def test_single_index_matches_whole_volume_and_dict_twin():
    vol = np.random.default_rng(0).random((2, 6, 6, 7)).astype(np.float32)
    whole = NeighbourSliceStack()(vol)
    for i in (0, 1, 3, 6):
        np.testing.assert_array_equal(NeighbourSliceStack()(vol, index=i), whole[..., i])
    d = NeighbourSliceStackd(keys="image")({"image": vol})
    np.testing.assert_array_equal(d["image"], whole)
    assert whole.shape[0] == 8  # C * K channels, channel-major


def test_stack_invalid_arguments():
    with pytest.raises(ValueError):
        NeighbourSliceStack(offsets=())
    with pytest.raises(ValueError):
        NeighbourSliceStack()(np.zeros((3, 4, 5)))
    with pytest.raises(IndexError):
        NeighbourSliceStack()(_volume(5), index=5)


def test_crop_resize_window_and_inverse_restores_grid():
    rng = np.random.default_rng(1)
    img = MetaTensor(torch.as_tensor(rng.random((1, 197, 233, 3), dtype=np.float32)), affine=torch.eye(4))
    t = InPlaneCropResize()
    out = t(img)
    assert out.shape == (1, 192, 192, 3)
    back = t.inverse(out)
    assert back.shape == img.shape
    assert torch.allclose(back.affine, img.affine)
    # outside the 180x180 window the inverse pads zeros; inside it round-trips a smooth image closely
    assert float(back[:, :10].abs().max()) == 0.0 and float(back[:, :, 220:].abs().max()) == 0.0
    smooth = MetaTensor(torch.linspace(0, 1, 197)[None, :, None, None].expand(1, 197, 233, 3).clone())
    rt = t.inverse(t(smooth))
    assert float((rt - smooth)[:, 12:188, 42:218].abs().max()) < 0.01


def test_crop_resize_label_nearest_keeps_binary_and_window_error():
    lab = np.zeros((1, 197, 233, 2), dtype=np.float32)
    lab[0, 50:80, 60:100, :] = 1
    out = InPlaneCropResize(mode="nearest")(lab)
    assert set(np.unique(np.asarray(out))) == {0.0, 1.0}
    with pytest.raises(ValueError, match="window"):
        InPlaneCropResize()(np.zeros((1, 100, 100, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        InPlaneCropResize(roi_start=(10, 40), roi_end=(5, 220))


def test_invertd_maps_prediction_back_like_the_bundle():
    img = MetaTensor(torch.rand(1, 60, 70, 4), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    pre = Compose([InPlaneCropResized(keys="image", roi_start=(5, 5), roi_end=(53, 53), spatial_size=(32, 32))])
    d = pre({"image": img})
    assert d["image"].shape == (1, 32, 32, 4)
    d["pred"] = MetaTensor(torch.ones(1, 32, 32, 4), meta=d["image"].meta,
                           applied_operations=d["image"].applied_operations)
    inv = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)(d)
    assert inv["pred"].shape == (1, 60, 70, 4)
    p = np.asarray(inv["pred"])
    assert p[0, 5:53, 5:53].min() == 1.0 and p[0, :5].max() == 0.0 and p[0, 53:].max() == 0.0
    assert torch.allclose(inv["pred"].affine.float(), img.affine.float())


def test_rand_slice_sampler_seeded_and_positive_bias():
    vol = np.random.default_rng(2).random((1, 8, 8, 20)).astype(np.float32)
    lab = np.zeros((1, 8, 8, 20), dtype=np.float32)
    lab[..., 7] = 1
    s1 = RandSlice25Dd(num_samples=12, pos_fraction=1.0).set_random_state(3)
    out = s1({"image": vol, "label": lab, "subject": "a"})
    # distinct slices (no replacement): the one lesion slice, then 11 others
    idx = [o["slice_index"] for o in out]
    assert len(out) == 12 and len(set(idx)) == 12 and 7 in idx
    k = idx.index(7)
    assert out[k]["image"].shape == (4, 8, 8) and out[k]["label"].shape == (1, 8, 8) and out[k]["subject"] == "a"
    torch.testing.assert_close(out[k]["image"], torch.as_tensor(NeighbourSliceStack()(vol, index=7)))
    assert float(out[k]["label"].sum()) == 64.0
    # more samples than slices: every slice once
    every = RandSlice25D(num_samples=30, pos_fraction=0.5).set_random_state(0)
    every(vol, lab)
    assert sorted(every.indices) == list(range(20))
    a = RandSlice25D(num_samples=10, pos_fraction=0.0).set_random_state(5)
    b = RandSlice25D(num_samples=10, pos_fraction=0.0).set_random_state(5)
    a(vol, lab)
    b(vol, lab)
    assert a.indices == b.indices
    with pytest.raises(ValueError):
        RandSlice25D(num_samples=0)
    with pytest.raises(ValueError):
        RandSlice25D(pos_fraction=1.5)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_merge_masks_union(as_tensor):
    m = np.zeros((2, 4, 4, 2), dtype=np.float32)
    m[0, 0, 0, 0] = 1
    m[1, 3, 3, 1] = 1
    x = torch.as_tensor(m) if as_tensor else m
    out = np.asarray(MergeMasks()(x))
    assert out.shape == (1, 4, 4, 2) and out.sum() == 2 and out[0, 0, 0, 0] == 1 and out[0, 3, 3, 1] == 1
    d = MergeMasksd(keys="label")({"label": x})
    np.testing.assert_array_equal(np.asarray(d["label"]), out)
