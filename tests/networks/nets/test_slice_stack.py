"""The 2.5D networks' shared argument checks (``lesionlab.networks.nets.slice_stack``): what passes, what is refused."""

from __future__ import annotations

import pytest

from lesionlab.networks.nets.slice_stack import check_choice, check_fraction, check_odd_kernel, check_slice_stack


def test_check_slice_stack_accepts_the_thesis_contract_and_returns_the_features():
    # four stacked slices in, one 2D map out, five encoder stages (seed 002 §3)
    assert check_slice_stack(2, 4, 1, [32, 64, 128, 256, 512]) == (32, 64, 128, 256, 512)
    assert check_slice_stack(2, 8, 2, (1, 1, 1, 1, 1)) == (1, 1, 1, 1, 1)


@pytest.mark.parametrize("args, message", [
    ((3, 4, 1, [8] * 5), "spatial_dims must be 2"),
    ((2, 3, 1, [8] * 5), "multiple of 4"),
    ((2, 0, 1, [8] * 5), "multiple of 4"),
    ((2, 4, 0, [8] * 5), "out_channels"),
    ((2, 4, 1, [8] * 4), "5 positive"),
    ((2, 4, 1, [8, 8, 0, 8, 8]), "5 positive"),
])
def test_check_slice_stack_refuses(args, message):
    with pytest.raises(ValueError, match=message):
        check_slice_stack(*args)


def test_choice_fraction_and_kernel_checks():
    assert check_choice("fusion", "cff", ("cff", "add")) == "cff"
    with pytest.raises(ValueError, match=r"fusion must be one of \('cff', 'add'\), got 'sum'"):
        check_choice("fusion", "sum", ("cff", "add"))
    check_fraction("dropout", 0.0)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
            check_fraction("dropout", bad)
    check_odd_kernel("up_kernel_size", 3)
    for bad in (0, 2, -3):
        with pytest.raises(ValueError, match="positive odd integer"):
            check_odd_kernel("up_kernel_size", bad)
