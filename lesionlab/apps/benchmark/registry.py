"""The suite's networks and peers: :data:`NETWORKS` (every network of the project at its paper configuration and
input size, and a reduced ``--quick`` build) and :data:`PEERS` (other implementations measured on the same input)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn


@dataclass(frozen=True)
class BenchNet:
    """One network of the suite.

    Args:
        name: row name.
        source: where the configuration comes from (bundle config or paper table).
        build: builds the network at the paper's configuration.
        input_shape: input at the paper's size (batch reduced).
        quick_build: builds a reduced-width network for ``--quick``.
        quick_shape: the ``--quick`` input.
        conv: a convolutional network (the training-peak goal applies).
        resizable: the input size may be reduced under ``max_train_gflop`` (not for a fixed position embedding).
    """

    name: str
    source: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    quick_build: Callable[[], nn.Module]
    quick_shape: tuple[int, ...]
    conv: bool = True
    resizable: bool = True


@dataclass(frozen=True)
class Peer:
    """A peer implementation measured on ``ours``'s input. ``same_architecture``: the no-faster-peer goal applies."""

    ours: str
    name: str
    build: Callable[[], nn.Module]
    quick_build: Callable[[], nn.Module]
    same_architecture: bool
    note: str = ""
    requires: str = "monai"


def _nets() -> Any:
    from lesionlab.networks import nets

    return nets


def _monai_nets() -> Any:
    from monai.networks import nets

    return nets


_DUNET_SMALL = {"features": (4, 8, 16, 32, 64), "fusion_reduction": 4}
_AGMR_SMALL = {"features": (4, 8, 8, 16, 16), "cpa_grid": 2, "fusion_reduction": 4, "dropout": 0.0, "mdu_dropout": 0.0}
_AGMR_BUNDLE = {"encoder_attention": "cpa", "fusion": "cff", "mdu": "decoder", "mdu_kernels": (3, 5, 7, 9),
                "cff_reduction": 8}
_TSRL_BUNDLE = {"residual_attention": "crl", "deep_supervision": True, "fusion": "cff", "mdu": "decoder",
                "mdu_kernels": (3,)}
_FEAT = (32, 64, 128, 256, 512)
_VIT_SMALL = {"hidden_size": 32, "mlp_dim": 64, "num_layers": 2, "num_heads": 4}

#: every network of the project at its paper configuration (the bundle's ``network_def``) and paper input size
NETWORKS: list[BenchNet] = [
    BenchNet("DUNet", "brain_mri_dunet_stroke_segmentation (thesis Table 4.3)",
             lambda: _nets().DUNet(2, 4, 1, features=_FEAT), (1, 4, 192, 192),
             lambda: _nets().DUNet(2, 4, 1, **_DUNET_SMALL), (2, 4, 32, 32)),
    BenchNet("AGMRNet", "brain_mri_agmrnet_stroke_segmentation",
             lambda: _nets().AGMRNet(2, 4, 1, features=_FEAT, **_AGMR_BUNDLE), (1, 4, 192, 192),
             lambda: _nets().AGMRNet(2, 4, 1, **_AGMR_SMALL), (2, 4, 32, 32)),
    BenchNet("TSRLNet", "brain_mri_tsrlnet_stroke_segmentation",
             lambda: _nets().TSRLNet(2, 4, 1, features=_FEAT, **_TSRL_BUNDLE), (1, 4, 192, 192),
             lambda: _nets().TSRLNet(2, 4, 1, **_AGMR_SMALL), (2, 4, 32, 32)),
    BenchNet("UNet3D (MONAI)", "brain_mri_unet3d_stroke_segmentation (96^3 patches)",
             lambda: _monai_nets().UNet(3, 1, 1, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2),
                                        num_res_units=2, norm="batch"), (1, 1, 96, 96, 96),
             lambda: _monai_nets().UNet(3, 1, 1, channels=(4, 8, 16, 32), strides=(2, 2, 2), num_res_units=1,
                                        norm="batch"), (1, 1, 16, 16, 16)),
    BenchNet("DeepLabV3Plus", "colon_he_nuclei_imbalance_segmentation (256^2 crops, os 16)",
             lambda: _nets().DeepLabV3Plus(2, 3, 7, output_stride=16), (1, 3, 256, 256),
             lambda: _nets().DeepLabV3Plus(2, 3, 7, layers=(1, 1, 1, 1), widths=(4, 8, 8, 8), stem_channels=8,
                                           aspp_channels=8, decoder_channels=8, low_level_channels=4),
             (2, 3, 32, 32)),
    BenchNet("UNet3Plus", "colon_he_nuclei_imbalance_segmentation variants/unet3plus",
             lambda: _nets().UNet3Plus(2, 3, 7, deep_supervision=True), (1, 3, 256, 256),
             lambda: _nets().UNet3Plus(2, 3, 7, features=(4, 8, 8, 16, 16), cat_channels=4), (2, 3, 32, 32)),
    BenchNet("UNetPlusPlus", "colon_he_nuclei_imbalance_segmentation variants/unetpp",
             lambda: _nets().UNetPlusPlus(2, 3, 7, features=(64, 128, 256, 512, 1024, 64), norm="batch"),
             (1, 3, 256, 256),
             lambda: _nets().UNetPlusPlus(2, 3, 7, features=(4, 8, 8, 16, 16, 4)), (2, 3, 32, 32)),
    BenchNet("PSPNetCBAM", "kidney_pas_pspnet_cbam_glomeruli_segmentation (256^2, CBAM, PSP decoder)",
             lambda: _nets().PSPNetCBAM(2, 3, 2, layers=(3, 4, 6, 3), width=64, cbam=True, decoder="psp"),
             (2, 3, 256, 256),  # batch 2: the pyramid's 1x1 bin has batch norm (one value per channel at batch 1)
             lambda: _nets().PSPNetCBAM(2, 3, 2, layers=(1, 1, 1, 1), width=8, ppm_channels=8, head_channels=16,
                                        aux_channels=8, cbam_reduction=4, cbam=True), (2, 3, 32, 32)),
    BenchNet("SEResNet50Improved", "kidney_pathology_seresnet_glomerulus_classification (224^2, reading B)",
             lambda: _nets().SEResNet50Improved(2, 3, 4, reading="B"), (1, 3, 224, 224),
             lambda: _nets().SEResNet50Improved(2, 3, 4, layers=(1, 1, 1, 1), channels=(4, 8, 8, 16),
                                                stem_channels=8, reduction=4), (2, 3, 32, 32)),
    BenchNet("TransformerEncoderUNet", "kidney_nm_renogram_parenchyma_segmentation (384^2, 128-pixel patches)",
             lambda: _nets().TransformerEncoderUNet(2, 3, 1, img_size=384, patch_size=128), (1, 3, 384, 384),
             lambda: _nets().TransformerEncoderUNet(2, 3, 1, img_size=32, patch_size=16, decoder_channels=(8, 8, 8, 8),
                                                    **_VIT_SMALL), (2, 3, 32, 32), conv=False, resizable=False),
    BenchNet("FCN", "kidney_nm_renogram_parenchyma_segmentation variants/fcn (VGG-16, 384^2)",
             lambda: _nets().FCN(2, 3, 1), (1, 3, 384, 384),
             lambda: _nets().FCN(2, 3, 1, channels=(4, 8, 8, 16, 16), fc_channels=16), (2, 3, 32, 32)),
    BenchNet("SegNet", "kidney_nm_renogram_parenchyma_segmentation variants/segnet (VGG-16, 384^2)",
             lambda: _nets().SegNet(2, 3, 1), (1, 3, 384, 384),
             lambda: _nets().SegNet(2, 3, 1, channels=(4, 8, 8, 16, 16)), (2, 3, 32, 32)),
]


def _smp() -> Any:
    import segmentation_models_pytorch as smp

    return smp


#: peers on the same input as ``ours`` (MONAI's, and segmentation-models-pytorch's when it imports)
PEERS: list[Peer] = [
    Peer("SEResNet50Improved", "MONAI SEResNet50",
         lambda: _monai_nets().SEResNet50(spatial_dims=2, in_channels=3, num_classes=4),
         lambda: _monai_nets().SEResNet50(spatial_dims=2, in_channels=3, num_classes=4, layers=(1, 1, 1, 1)), True,
         "same ResNet-50 + squeeze-excitation body; ours adds the improved-block changes of seed 004"),
    Peer("DUNet", "MONAI UNet (2D, same widths)",
         lambda: _monai_nets().UNet(2, 4, 1, channels=_FEAT, strides=(2, 2, 2, 2), num_res_units=0, norm="batch"),
         lambda: _monai_nets().UNet(2, 4, 1, channels=(4, 8, 16, 32, 64), strides=(2, 2, 2, 2), num_res_units=0,
                                    norm="batch"), False,
         "a plain 2D U-Net on the same 4-slice stack: the cost of D-UNet's 3D encoder and fusion"),
    Peer("TransformerEncoderUNet", "MONAI ViT (encoder only, same size)",
         lambda: _monai_nets().ViT(3, (384, 384), 128, hidden_size=768, mlp_dim=3072, num_layers=12, num_heads=12,
                                   spatial_dims=2, classification=False),
         lambda: _monai_nets().ViT(3, (32, 32), 16, spatial_dims=2, classification=False, **_VIT_SMALL), False,
         "the peer is the encoder only; ours adds the convolutional decoder"),
    Peer("PSPNetCBAM", "smp PSPNet (ResNet-50)",
         lambda: _smp().PSPNet("resnet50", encoder_weights=None, in_channels=3, classes=2),
         lambda: _smp().PSPNet("resnet18", encoder_weights=None, in_channels=3, classes=2), True,
         requires="segmentation_models_pytorch"),
    Peer("DeepLabV3Plus", "smp DeepLabV3+ (ResNet-50)",
         lambda: _smp().DeepLabV3Plus("resnet50", encoder_weights=None, in_channels=3, classes=7),
         lambda: _smp().DeepLabV3Plus("resnet18", encoder_weights=None, in_channels=3, classes=7), True,
         requires="segmentation_models_pytorch"),
]
