"""The ablation / variant override files of the AGMR-Net and TSRL-Net bundles: each parses merged over train.json
and over inference.json (as `lesionlab experiments` and `monai.bundle run` merge them), builds the intended network
and a loss whose channel layout matches that network, and the parameter counts of the Table 3.1 / 3.7 rows are those
of the network's constructor arguments (Table 3.7's differences equal the thesis's exactly)."""

from __future__ import annotations

import glob
import inspect
import json
import os

import pytest
import torch
from monai.bundle import ConfigParser

from lesionlab.apps.bundle import bundle_path
from lesionlab.networks.nets import AGMRNet, TSRLNet
from lesionlab.pipelines.losses import AGMRLoss, TSRLLoss

AGMR = "brain_mri_agmrnet_stroke_segmentation"
TSRL = "brain_mri_tsrlnet_stroke_segmentation"

# every override file: (network constructor arguments that differ from the plain bundle, loss arguments that differ)
NOCPA = {"n_cpa": 0}
EML = {"beta": 1, "dice": "neg_log"}  # TSRLLoss written as EML: focus map = label, -log Dice
EXPECTED: dict[str, dict[str, tuple[dict, dict]]] = {
    AGMR: {
        "ablation/t31_baseline.json": ({"encoder_attention": "none", "fusion": "se_add", "mdu": "none"}, NOCPA),
        "ablation/t31_cpa.json": ({"fusion": "se_add", "mdu": "none"}, {}),
        "ablation/t31_cff.json": ({"encoder_attention": "none", "mdu": "none"}, NOCPA),
        "ablation/t31_mdu.json": ({"encoder_attention": "none", "fusion": "se_add"}, NOCPA),
        "ablation/t31_cpa_cff.json": ({"mdu": "none"}, {}),
        "variants/cff_r32.json": ({"encoder_attention": "none", "mdu": "none", "cff_reduction": 32}, NOCPA),
        **{f"variants/mdu_k{k}.json": ({"mdu_kernels": [k]}, {}) for k in (3, 5, 7, 9)},
        # Table 3.4 "D-UNet + FA", Table 3.5 fusions, Table 3.8 MDU positions
        "variants/fine_attention.json": ({"encoder_attention": "fine", "fusion": "se_add", "mdu": "none"}, NOCPA),
        **{f"variants/fusion_{f}.json": ({"fusion": f}, {}) for f in ("add", "concat", "cff_concat")},
        **{f"variants/mdu_{p}.json": ({"mdu": p}, {}) for p in ("encoder", "skip")},
    },
    TSRL: {
        "ablation/t41_baseline.json": ({"residual_attention": "none", "deep_supervision": False},
                                       {"n_side": 0, **EML}),
        "ablation/t41_crl.json": ({}, EML),
        "ablation/t41_tal.json": ({"residual_attention": "none", "deep_supervision": False}, {"n_side": 0}),
        **{f"ablation/t44_g{g}_b{b}.json": ({}, {"gamma": float(g), "beta": b}) for g in range(5) for b in (2, 4, 8)},
        "variants/ra_only.json": ({"residual_attention": "ra"}, EML),
    },
}
CASES = [(b, f) for b, files in EXPECTED.items() for f in files]

# thesis Table 3.7 parameter counts; Table 3.1's D-UNet count (Table 4.3)
THESIS_T37 = {None: 23_799_283, 3: 12_658_163, 5: 18_228_723, 7: 26_584_563, 9: 37_725_683}
THESIS_DUNET = 9_503_779


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _configs(bundle: str, name: str) -> str:
    return os.path.join(bundle_path(bundle), "configs", name)


def _parser(bundle: str, base: str, override: str | None, **extra) -> ConfigParser:
    parser = ConfigParser()
    files = [_configs(bundle, base)] + ([_configs(bundle, override)] if override else [])
    parser.read_config(files)
    parser["bundle_root"] = bundle_path(bundle)
    for k, v in extra.items():
        parser[k] = v
    return parser


def _plain(bundle: str, base: str, key: str) -> dict:
    return json.load(open(_configs(bundle, base)))[key]


def test_override_files_are_exactly_the_expected_ones():
    for bundle, files in EXPECTED.items():
        cfg = os.path.join(bundle_path(bundle), "configs")
        found = {os.path.relpath(p, cfg) for d in ("ablation", "variants")
                 for p in glob.glob(os.path.join(cfg, d, "*.json"))}
        assert found == set(files), (bundle, sorted(found ^ set(files)))


@pytest.mark.parametrize("bundle,override", CASES)
def test_override_content_changes_only_the_intended_ids(bundle, override):
    raw = json.load(open(_configs(bundle, override)))
    # `loss#...` ids cannot be set over inference.json (no `loss` there): the whole loss object is replaced instead
    assert not [k for k in raw if k.startswith("loss#")]
    assert set(raw) <= {"_desc_", "loss"} | {k for k in raw if k.startswith("network_def#")}
    net_changes, loss_changes = EXPECTED[bundle][override]
    assert {k.split("#", 1)[1]: v for k, v in raw.items() if k.startswith("network_def#")} == net_changes
    plain_net = _plain(bundle, "train.json", "network_def")
    # an override sets arguments the bundle's network_def sets, or (the string options of the comparison rows, left at
    # their defaults by the bundle) other arguments of the network's constructor
    net_cls = {"lesionlab.networks.nets.AGMRNet": AGMRNet, "lesionlab.networks.nets.TSRLNet": TSRLNet}[
        plain_net["_target_"]]
    known = set(plain_net) | set(inspect.signature(net_cls).parameters)
    assert set(net_changes) <= known, "override names an argument the network's constructor does not have"
    plain_loss = _plain(bundle, "train.json", "loss")
    assert raw.get("loss", plain_loss) == {**plain_loss, **loss_changes}


@pytest.mark.parametrize("bundle,override", CASES)
def test_override_parses_over_train_and_inference_and_builds_consistent_network_and_loss(bundle, override):
    tiny = {"network_def#features": [4, 32, 32, 32, 32]}  # CFF R = 32 needs >= 32 channels at stages 2 and 3
    train = _parser(bundle, "train.json", override, **tiny)
    infer = _parser(bundle, "inference.json", override, **tiny)
    assert train["network_def"] == infer["network_def"]
    net = train.get_parsed_content("network_def")
    net_inf = infer.get_parsed_content("network_def")
    assert type(net) is type(net_inf) and net.state_dict().keys() == net_inf.state_dict().keys()
    loss = train.get_parsed_content("loss")
    assert isinstance(loss, AGMRLoss if bundle == AGMR else TSRLLoss)
    # the loss splits the train-mode output of this very network (wrong n_cpa / n_side raise here)
    torch.manual_seed(0)
    x = torch.rand(2, 4, 96, 96)
    label = torch.zeros(2, 1, 96, 96)
    label[:, :, 30:50, 40:60] = 1
    out = net.train()(x)
    value = loss(out, label)
    assert torch.isfinite(value)
    value.backward()
    assert tuple(net.eval()(x).shape) == (2, 1, 96, 96)


def _paper_width_count(bundle: str, override: str | None) -> int:
    return _n_params(_parser(bundle, "inference.json", override).get_parsed_content("network_def"))


@pytest.mark.parametrize("override", list(EXPECTED[AGMR]))
def test_agmr_param_counts_equal_the_constructor_arguments(override):
    net_changes, _ = EXPECTED[AGMR][override]
    assert _paper_width_count(AGMR, override) == _n_params(AGMRNet(**net_changes))


def test_table_3_1_and_3_7_counts():
    full = _paper_width_count(AGMR, None)
    assert full == _n_params(AGMRNet()) == 23_014_801
    assert _paper_width_count(AGMR, "ablation/t31_baseline.json") == THESIS_DUNET  # the D-UNet backbone, exact
    counts = {k: _paper_width_count(AGMR, f"variants/mdu_k{k}.json") for k in (3, 5, 7, 9)}
    assert counts == {3: 11_873_681, 5: 17_444_241, 7: 25_800_081, 9: 36_941_201}
    for k, n in counts.items():  # every Table 3.7 difference is the thesis's, to the parameter
        assert n - full == THESIS_T37[k] - THESIS_T37[None]
    assert {THESIS_T37[k] - n for k, n in counts.items()} == {THESIS_T37[None] - full} == {784_482}


def test_tsrl_param_counts():
    assert _paper_width_count(TSRL, None) == _n_params(TSRLNet()) == 11_874_645
    # Table 4.1's baseline keeps the bundle's 3x3 deconvolution: AGMR-Net's "Size = 3" network
    assert _paper_width_count(TSRL, "ablation/t41_baseline.json") == _n_params(AGMRNet(mdu_kernels=[3]))
    assert _paper_width_count(TSRL, "ablation/t41_tal.json") == _paper_width_count(TSRL, "ablation/t41_baseline.json")
    assert _paper_width_count(TSRL, "variants/ra_only.json") == _n_params(TSRLNet(residual_attention="ra"))
