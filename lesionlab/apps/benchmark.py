"""Benchmark suite: every network against the machine's convolution peak and its peers, and the end-to-end paths.

One run (``lesionlab bench`` or ``python bench/run.py``) measures on the current machine and writes a JSON file of
results (default ``bench/results.json``), a markdown table next to it (``.md``) and PNG plots:

- **peak**: GFLOP/s of one large 3x3 convolution (forward, eval, ``torch.inference_mode``) in contiguous and
  ``channels_last`` memory format, at the start and at the end of the run; the fastest is the reference every ratio
  below divides by;
- **networks** (:data:`NETWORKS`: every network of ``lesionlab.networks.nets`` and the 3D U-Net of the stroke
  bundle, each as its bundle builds it, at its paper input size with a reduced batch): forward (eval,
  ``torch.inference_mode``) and forward + backward (train mode, ``sum(mean(outputs))`` as the loss, no optimiser
  step) seconds per sample, the FLOPs of both counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix
  products and convolutions only, backward included), achieved GFLOP/s and their ratio to the peak, and the peak
  memory of each phase; in contiguous and channels_last format, and through ``torch.compile`` with ``--compile``;
- **peers** (:data:`PEERS`): the same input through a MONAI implementation, ours measured again right before it; the
  ratio ours / peer of the times (< 1: ours is faster). segmentation-models-pytorch's PSPNet and DeepLabV3+ are
  measured when the package imports;
- **end to end**: 2.5D inference of a 189-slice volume by each stroke network through ``Slice25DInferer`` (seconds
  per volume and the share of time outside the network; batched vs per-slice calls, ``inference_mode`` vs
  ``no_grad``, channels_last vs contiguous on D-UNet), 3D sliding-window inference of one MNI-sized volume by the
  3D U-Net bundle's network, whole-slide tiles/s and patches/s (``bench/bench_wsi.py``'s phases, run as
  subprocesses), data-loader samples/s of MONAI ``Dataset`` vs ``CacheDataset`` vs ``PersistentDataset`` on NIfTI
  volumes with the stroke bundles' kind of preprocessing;
- **goals** (ratios, so that they hold on any machine): training step >= 60 % of the peak for convolutional
  networks; volume inference <= 10 % of its time outside the network; no peer of the same architecture faster.

Peak memory: the increase of the resident set size over its value at the start of a phase. Free heap pages are
returned to the OS first (glibc ``malloc_trim``) and the process's peak RSS is reset before each phase by writing
``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0) and read back as ``VmHWM`` afterwards, so that every phase of one
process gets its own peak (``tracemalloc`` does not see torch's allocations). Where ``clear_refs`` is not writable
the figure is the growth of ``ru_maxrss``, which is only an upper bound after the first phase;
``results["memory_method"]`` says which was used. On CUDA it is ``torch.cuda.max_memory_allocated``'s growth.

Timings: median of the runs after one warm-up run, with at least one and at most ``repeats`` timed runs, stopping
once ``min_seconds`` of timed runs have accumulated; a warm-up run longer than 5 s is kept as the first timed run
(UNet 3+ and U-Net++ at 256 x 256 take tens of seconds per training step on two cores). Timings depend on the
machine and its load: the results record ``os.getloadavg()`` before and after the run; figures measured on a loaded
machine are pessimistic.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from lesionlab.networks.utils import to_memory_format
from lesionlab.utils import atomic_write_text, save_figure

__all__ = ["NETWORKS", "PEERS", "BenchNet", "Peer", "conv_flops", "count_flops", "peak_conv", "run", "main"]

#: goal thresholds (ratios): training GFLOP/s / peak, share of volume-inference time outside the network,
#: ours / peer time for a peer of the same architecture
TRAIN_PEAK_GOAL = 0.60
OUTSIDE_GOAL = 0.10
PEER_GOAL = 1.0
#: depth of the stroke volumes (MNI152 1 mm grid, 189 axial slices, as the ATLAS data the stroke bundles train on)
STROKE_DEPTH = 189


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


# ------------------------------------------------------------------------------------------------ device and AMP
#: the device and mixed precision of the current run (set by :func:`run`)
_RUN = {"device": torch.device("cpu"), "amp": False}


def _dev() -> torch.device:
    return _RUN["device"]  # type: ignore[return-value]


def _on_cuda() -> bool:
    """Whether the run's configured device (``--device``) is a CUDA device."""
    return _dev().type == "cuda"  # ok: reads the device the user configured, does not choose one


def _sync() -> None:
    if _on_cuda():
        torch.cuda.synchronize(_dev())


def _autocast() -> contextlib.AbstractContextManager:
    """Autocast (float16 on CUDA, bfloat16 on CPU) when the run uses AMP, else nothing."""
    if not _RUN["amp"]:
        return contextlib.nullcontext()
    return torch.autocast(_dev().type, dtype=torch.float16 if _on_cuda() else torch.bfloat16)


# ---------------------------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def _release_free_memory() -> None:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``), so that a phase cannot hide its peak in
    memory an earlier phase freed but the allocator kept; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


MEMORY_METHOD = ("peak RSS increase over the phase's starting RSS (free heap returned by malloc_trim, peak reset via "
                 "/proc/self/clear_refs, read as VmHWM)")
MEMORY_FALLBACK = "growth of ru_maxrss (upper bound after the first phase: clear_refs not writable)"


class PeakMemory:
    """Context manager: ``mib`` is the peak memory of the enclosed phase (see the module docstring)."""

    def __enter__(self) -> PeakMemory:
        self.cuda = _on_cuda()
        if self.cuda:  # device memory: torch's allocator statistics
            torch.cuda.reset_peak_memory_stats(_dev())
            self.start = torch.cuda.memory_allocated(_dev())
            self.mib = 0.0
            return self
        _release_free_memory()
        self.exact = _reset_peak()
        self.start = (_status_kib("VmRSS") if self.exact else None) or _maxrss_kib()
        self.mib = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self.mib = max(0, torch.cuda.max_memory_allocated(_dev()) - self.start) / 2**20
            return
        end = (_status_kib("VmHWM") if self.exact else None) or _maxrss_kib()
        self.mib = max(0, end - self.start) / 1024.0


# ---------------------------------------------------------------------------------------------------------- timing
#: a warm-up run longer than this counts as the first timed run (its one-off costs are then a small share of it)
LONG_RUN_S = 5.0


def _time(fn: Callable[[], Any], repeats: int, min_seconds: float) -> float:
    """Median seconds of ``fn`` after one warm-up run: 1 to ``repeats`` timed runs, stopping after ``min_seconds``.

    A warm-up run longer than :data:`LONG_RUN_S` is kept as the first timed run."""
    t0 = time.perf_counter()
    fn()
    _sync()
    first = time.perf_counter() - t0
    times: list[float] = [first] if first > LONG_RUN_S else []
    if times and sum(times) >= min_seconds:
        return first
    while len(times) < max(1, repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
        if sum(times) >= min_seconds:
            break
    return statistics.median(times)


def _loss(out: Any) -> torch.Tensor:
    """``sum(mean(t))`` over every tensor a network returns (deep-supervision tuples, dicts)."""
    if isinstance(out, torch.Tensor):
        return out.float().mean()
    if isinstance(out, dict):
        out = list(out.values())
    return sum(_loss(o) for o in out)  # type: ignore[return-value]


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        for p in model.parameters():
            p.grad = None
        with _autocast():
            loss = _loss(model(x))
        loss.backward()

    return step


def _forward(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def fwd() -> None:
        with torch.inference_mode(), _autocast():
            model(x)

    return fwd


def _memory_format(ndim: int) -> torch.memory_format:
    return torch.channels_last_3d if ndim == 5 else torch.channels_last


# ----------------------------------------------------------------------------------------------------------- FLOPs
def conv_flops(batch: int, c_in: int, c_out: int, out_spatial: Sequence[int], kernel: Sequence[int],
               groups: int = 1) -> int:
    """FLOPs of one convolution the way ``FlopCounterMode`` counts them: 2 x MACs, no bias term."""
    macs = batch * c_out * (c_in // groups)
    for s in out_spatial:
        macs *= s
    for k in kernel:
        macs *= k
    return 2 * macs


def count_flops(model: nn.Module, shape: Sequence[int], train: bool) -> int:
    """FLOPs (``FlopCounterMode``) of one forward (eval) or forward + backward (train) on a ``shape`` input.

    Counted on the meta device (shapes only) when every operator has a meta kernel, else on the CPU."""
    import copy

    for device in ("meta", "cpu"):
        try:
            m = copy.deepcopy(model).to(device).train(train)
            x = torch.randn(*shape, device=device)
            with FlopCounterMode(display=False) as counter:
                if train:
                    _loss(m(x)).backward()
                else:
                    with torch.no_grad():
                        m(x)
            return int(counter.get_total_flops())
        except (NotImplementedError, RuntimeError):
            if device == "cpu":
                raise
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------------------ peak
def peak_conv(quick: bool, repeats: int, min_seconds: float) -> dict[str, Any]:
    """GFLOP/s of a large 3x3 convolution (padding 1, no bias) in both memory formats; the faster is the peak."""
    n, c, hw = (2, 64, 32) if quick else (4, 256, 64)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False).eval().to(_dev())
    x = torch.randn(n, c, hw, hw, device=_dev())
    flops = conv_flops(n, c, c, (hw, hw), (3, 3))
    res: dict[str, Any] = {"input_shape": [n, c, hw, hw], "kernel": 3, "flops": flops}
    for fmt in ("contiguous", "channels_last"):
        m, xi = (conv, x) if fmt == "contiguous" else (conv.to(memory_format=torch.channels_last),
                                                       x.contiguous(memory_format=torch.channels_last))
        s = _time(_forward(m, xi), repeats, min_seconds)
        res[fmt] = {"seconds": s, "gflops": flops / s / 1e9}
    res["best_format"] = max(("contiguous", "channels_last"), key=lambda f: res[f]["gflops"])
    res["gflops"] = res[res["best_format"]]["gflops"]
    return res


# -------------------------------------------------------------------------------------------------------- networks
def _measure(model: nn.Module, x: torch.Tensor, flops_fwd: int, flops_train: int, peak: float, repeats: int,
             min_seconds: float) -> dict[str, Any]:
    b = x.shape[0]
    model.eval()
    with PeakMemory() as mem_f:
        t_f = _time(_forward(model, x), repeats, min_seconds)
    model.train()
    with PeakMemory() as mem_t:
        t_t = _time(_train_step(model, x), repeats, min_seconds)
    for p in model.parameters():
        p.grad = None
    model.eval()
    return {"forward_s_per_sample": t_f / b, "train_s_per_sample": t_t / b,
            "forward_gflops": flops_fwd / t_f / 1e9, "train_gflops": flops_train / t_t / 1e9,
            "forward_peak_ratio": flops_fwd / t_f / 1e9 / peak, "train_peak_ratio": flops_train / t_t / 1e9 / peak,
            "forward_peak_mib": mem_f.mib, "train_peak_mib": mem_t.mib}


def bench_network(build: Callable[[], nn.Module], shape: Sequence[int], peak: float, repeats: int,
                  min_seconds: float, compile_: bool = False, max_train_gflop: float | None = None,
                  resizable: bool = True) -> dict[str, Any]:
    """One network: FLOPs, then contiguous, channels_last (and ``torch.compile``) timings and memory.

    ``max_train_gflop``: when a training step at ``shape`` counts more GFLOPs, the spatial size is halved (down to
    64) until it does not (``resizable`` networks only); ``paper_input_shape`` keeps the size asked for."""
    torch.manual_seed(0)
    model = build()
    paper = list(shape)
    flops_train = count_flops(model, shape, train=True)
    while (resizable and max_train_gflop and flops_train > max_train_gflop * 1e9
           and min(shape[2:]) >= 128 and all(s % 64 == 0 for s in shape[2:])):
        shape = (*shape[:2], *(s // 2 for s in shape[2:]))
        flops_train = count_flops(model, shape, train=True)
    res: dict[str, Any] = {"input_shape": list(shape), "paper_input_shape": paper, "batch": shape[0],
                           "parameters": sum(p.numel() for p in model.parameters()),
                           "flops_forward": count_flops(model, shape, train=False),
                           "flops_train": flops_train, "formats": {}}
    model = model.to(_dev())
    x = torch.randn(*shape, device=_dev())
    args = (res["flops_forward"], res["flops_train"], peak, repeats, min_seconds)
    res["formats"]["contiguous"] = _measure(model, x, *args)
    fmt = _memory_format(len(shape))
    res["formats"]["channels_last"] = _measure(to_memory_format(model), x.contiguous(memory_format=fmt), *args)
    to_memory_format(model, False)
    if compile_:
        try:
            t0 = time.perf_counter()
            compiled = torch.compile(model)
            compiled.eval()
            with torch.inference_mode():
                compiled(x)
            compiled.train()
            _loss(compiled(x)).backward()
            res["compile_seconds"] = time.perf_counter() - t0
            res["formats"]["compile"] = _measure(compiled, x, *args)
        except Exception as err:  # noqa: BLE001 - torch.compile fails in many ways (no compiler, graph breaks)
            res["formats"]["compile"] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    timed = {k: v for k, v in res["formats"].items() if "error" not in v}
    res["best_format"] = min(timed, key=lambda k: timed[k]["train_s_per_sample"])
    return res


def _importable(module: str) -> str | None:
    """None when ``module`` imports, else why not (one line)."""
    try:
        __import__(module)
        return None
    except Exception as err:  # noqa: BLE001 - a broken optional dependency raises anything (RuntimeError, OSError)
        return f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"


# ----------------------------------------------------------------------------------------------------- end to end
def _timed_network(model: nn.Module, acc: dict[str, float]) -> Callable[[torch.Tensor], torch.Tensor]:
    def call(x: torch.Tensor) -> torch.Tensor:
        _sync()
        t0 = time.perf_counter()
        y = model(x)
        _sync()
        acc["network_s"] += time.perf_counter() - t0
        return y

    return call


def slice25d_volume(model: nn.Module, size: int, depth: int, sw_batch_size: int = 16, grad_mode: str = "no_grad",
                    channels_last: bool = False) -> dict[str, Any]:
    """2.5D inference of one (1, 1, size, size, depth) volume through the bundles' ``Slice25DInferer``."""
    from lesionlab.pipelines.inferers import Slice25DInferer

    model = to_memory_format(model.eval().to(_dev()), channels_last)
    inferer = Slice25DInferer(sw_batch_size=sw_batch_size, activation="sigmoid")
    vol = torch.rand(1, 1, size, size, depth, generator=torch.Generator().manual_seed(0)).to(_dev())
    acc = {"network_s": 0.0}
    ctx = torch.inference_mode() if grad_mode == "inference" else torch.no_grad()
    with ctx, _autocast():
        inferer(vol[..., : min(depth, sw_batch_size)], model)  # warm-up: one network call of the timed size
        t0 = time.perf_counter()
        inferer(vol, _timed_network(model, acc))
        _sync()
        total = time.perf_counter() - t0
    return {"slices": depth, "sw_batch_size": sw_batch_size, "grad_mode": grad_mode, "channels_last": channels_last,
            "seconds": total, "network_s": acc["network_s"], "outside_share": 1.0 - acc["network_s"] / total}


def sliding_window_3d(model: nn.Module, shape: Sequence[int], roi: Sequence[int], sw_batch_size: int = 2,
                      overlap: float = 0.25) -> dict[str, Any]:
    """3D sliding-window inference (MONAI ``SlidingWindowInferer``, Gaussian blending) of one volume."""
    from monai.inferers import SlidingWindowInferer

    model = model.eval().to(_dev())
    inferer = SlidingWindowInferer(roi_size=tuple(roi), sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian")
    vol = torch.rand(1, 1, *shape, generator=torch.Generator().manual_seed(0)).to(_dev())
    acc = {"network_s": 0.0}
    with torch.inference_mode(), _autocast():
        model(torch.rand(sw_batch_size, 1, *roi, device=_dev()))  # warm-up
        t0 = time.perf_counter()
        inferer(vol, _timed_network(model, acc))
        _sync()
        total = time.perf_counter() - t0
    return {"volume": list(shape), "roi": list(roi), "overlap": overlap, "sw_batch_size": sw_batch_size,
            "seconds": total, "network_s": acc["network_s"], "outside_share": 1.0 - acc["network_s"] / total}


def data_loader(workdir: str, n: int, shape: Sequence[int], crop: Sequence[int], epochs: int = 2) -> dict[str, Any]:
    """Samples/s of MONAI ``Dataset`` vs ``CacheDataset`` vs ``PersistentDataset`` on NIfTI image/label pairs.

    Deterministic part (cached): load, channel first, RAS orientation, 1.5 mm resampling, z-score of the brain;
    random part (every epoch): a random crop and flip. Single-process loading (``num_workers=0``)."""
    import nibabel as nib
    import numpy as np
    from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        RandFlipd,
        RandSpatialCropd,
        Spacingd,
    )

    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        img = rng.normal(100, 20, size=tuple(shape)).astype(np.float32)
        lab = (rng.random(tuple(shape)) > 0.99).astype(np.uint8)
        for key, arr in (("image", img), ("label", lab)):
            nib.save(nib.Nifti1Image(arr, np.eye(4)), os.path.join(workdir, f"{key}{i:03d}.nii.gz"))
        items.append({k: os.path.join(workdir, f"{k}{i:03d}.nii.gz") for k in ("image", "label")})
    keys = ["image", "label"]
    transform = Compose([
        LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys), Orientationd(keys, axcodes="RAS", labels=None),
        Spacingd(keys, pixdim=(1.5, 1.5, 1.5), mode=("bilinear", "nearest")),
        NormalizeIntensityd("image", nonzero=True),
        RandSpatialCropd(keys, roi_size=tuple(crop), random_size=False), RandFlipd(keys, prob=0.5, spatial_axis=0),
    ])
    res: dict[str, Any] = {"volumes": n, "shape": list(shape), "crop": list(crop), "epochs": epochs}
    builders: dict[str, Callable[[], Any]] = {
        "Dataset": lambda: Dataset(items, transform),
        "CacheDataset": lambda: CacheDataset(items, transform, cache_rate=1.0, num_workers=0, progress=False),
        "PersistentDataset": lambda: PersistentDataset(items, transform, cache_dir=os.path.join(workdir, "cache")),
    }
    for name, make in builders.items():
        t0 = time.perf_counter()
        ds = make()
        build_s = time.perf_counter() - t0
        per_epoch = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            for _batch in DataLoader(ds, batch_size=1, num_workers=0):
                pass
            per_epoch.append(time.perf_counter() - t0)
        res[name] = {"build_s": build_s, "epoch_s": per_epoch,
                     "first_epoch_samples_per_s": n / (build_s + per_epoch[0]),
                     "steady_samples_per_s": n / per_epoch[-1]}
    return res


def wsi(bench_wsi: Path, height: int, width: int, timeout: float = 900) -> dict[str, Any]:
    """Whole-slide tiles/s and patches/s: ``bench/bench_wsi.py``'s generate, tile and segment phases."""
    if not bench_wsi.is_file():
        return {"error": f"{bench_wsi} not found (the benchmark scripts are in the source tree, not the wheel)"}
    workdir = tempfile.mkdtemp(prefix="lesionlab_bench_wsi_")
    res: dict[str, Any] = {"height": height, "width": width, "network": "small"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(bench_wsi.parent.parent)] + sys.path)}
    try:
        for phase in ("generate", "tile", "segment"):
            cmd = [sys.executable, str(bench_wsi), "--phase", phase, "--workdir", workdir, "--height", str(height),
                   "--width", str(width), "--network", "small"]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                 env=env, timeout=timeout).stdout
            res[phase] = json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
    except (subprocess.SubprocessError, StopIteration, json.JSONDecodeError, OSError) as err:
        res["error"] = f"{type(err).__name__}: {err}"[:300]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return res


# ----------------------------------------------------------------------------------------------------------- goals
def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal, its subject, the measured ratio, the target and pass/fail."""
    rows: list[dict[str, Any]] = []
    for r in results["networks"]:
        if r.get("conv") and "formats" in r:
            v = r["formats"][r["best_format"]]["train_peak_ratio"]
            rows.append({"goal": "training step >= 60 % of conv peak", "subject": r["name"], "value": v,
                         "target": f">= {TRAIN_PEAK_GOAL:.2f}", "pass": v >= TRAIN_PEAK_GOAL})
    e2e = results.get("end_to_end", {})
    for r in e2e.get("slice25d", []):
        if r.get("default"):
            rows.append({"goal": "volume inference <= 10 % outside the network", "subject": f"2.5D {r['network']}",
                         "value": r["outside_share"], "target": f"<= {OUTSIDE_GOAL:.2f}",
                         "pass": r["outside_share"] <= OUTSIDE_GOAL})
    sw = e2e.get("sliding_window_3d")
    if sw and "outside_share" in sw:
        rows.append({"goal": "volume inference <= 10 % outside the network", "subject": "3D sliding window UNet3D",
                     "value": sw["outside_share"], "target": f"<= {OUTSIDE_GOAL:.2f}",
                     "pass": sw["outside_share"] <= OUTSIDE_GOAL})
    for p in results["peers"]:
        if p.get("same_architecture") and "train_ratio" in p:
            v = max(p["train_ratio"], p["forward_ratio"])
            rows.append({"goal": "no peer of the same architecture faster (time ours/peer)",
                         "subject": f"{p['ours']} vs {p['peer']}", "value": v, "target": f"<= {PEER_GOAL:.2f}",
                         "pass": v <= PEER_GOAL})
    return rows


# -------------------------------------------------------------------------------------------------------- reports
def markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables."""
    m, pk = results["machine"], results["peak"]
    lines = [f"# Benchmark results ({'quick' if results['settings']['quick'] else 'full'} run)", "",
             f"Machine: {m['processor']} ({m['cpu_count']} CPUs), torch {m['torch']}, MONAI {m['monai']}, "
             f"{m['threads']} threads, device {results['settings'].get('device', 'cpu')}"
             f"{', AMP' if results['settings'].get('amp') else ''}; "
             f"load average before {m['load_before']}, after {m['load_after']}; "
             f"{m['date']}; {results['settings']['elapsed_s']:.0f} s.", "",
             f"Conv peak ({'x'.join(map(str, pk['input_shape']))} 3x3 conv): contiguous "
             f"{pk['contiguous']['gflops']:.1f} GFLOP/s, channels_last {pk['channels_last']['gflops']:.1f} GFLOP/s "
             f"({pk['best_format']} best); at the end of the run {results['peak_end']['gflops']:.1f} GFLOP/s "
             f"({results['peak_end']['best_format']}) -> reference (the faster) "
             f"**{results['reference_gflops']:.1f} GFLOP/s**.", "",
             f"Memory: {results['memory_method']}. FLOPs: FlopCounterMode (matmul/conv only, backward included "
             "for train).", "",
             "| network | input | GFLOP fwd/sample | fwd ms/sample | train ms/sample | fwd GFLOP/s (% peak) "
             "| train GFLOP/s (% peak) | train peak MiB | channels_last train speed-up | best |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results["networks"]:
        if "formats" not in r:
            lines.append(f"| {r['name']} | - | - | - | - | - | - | - | - | error: {r.get('error', '')} |")
            continue
        b = r["formats"][r["best_format"]]
        cont, cl = r["formats"]["contiguous"], r["formats"]["channels_last"]
        reduced = r["input_shape"][2:] != r["paper_input_shape"][2:]
        lines.append(
            f"| {r['name']} | {'x'.join(map(str, r['input_shape']))}"
            f"{' (paper ' + 'x'.join(map(str, r['paper_input_shape'][2:])) + ')' if reduced else ''} "
            f"| {r['flops_forward'] / r['batch'] / 1e9:.2f} "
            f"| {b['forward_s_per_sample'] * 1e3:.0f} | {b['train_s_per_sample'] * 1e3:.0f} "
            f"| {b['forward_gflops']:.1f} ({b['forward_peak_ratio']:.0%}) "
            f"| {b['train_gflops']:.1f} ({b['train_peak_ratio']:.0%}) | {b['train_peak_mib']:.0f} "
            f"| {cont['train_s_per_sample'] / cl['train_s_per_sample']:.2f}x | {r['best_format']} |")
    if results["peers"]:
        lines += ["", "| ours | peer | same architecture | GFLOP fwd ours / peer | fwd ms ours / peer "
                  "| train ms ours / peer | ratio fwd | ratio train | note |",
                  "|---|---|---|---:|---:|---:|---:|---:|---|"]
        for p in results["peers"]:
            if "error" in p:
                lines.append(f"| {p['ours']} | {p['peer']} | {p['same_architecture']} | - | - | - | - | - "
                             f"| not measured: {p['error']} |")
                continue
            lines.append(f"| {p['ours']} | {p['peer']} | {p['same_architecture']} "
                         f"| {p['ours_flops_forward'] / 1e9:.1f} / {p['peer_flops_forward'] / 1e9:.1f} "
                         f"| {p['ours_forward_s'] * 1e3:.0f} / {p['peer_forward_s'] * 1e3:.0f} "
                         f"| {p['ours_train_s'] * 1e3:.0f} / {p['peer_train_s'] * 1e3:.0f} "
                         f"| {p['forward_ratio']:.2f} | {p['train_ratio']:.2f} | {p['note']} |")
    e2e = results.get("end_to_end", {})
    if e2e.get("slice25d"):
        lines += ["", "| 2.5D volume inference | slices measured | sw_batch_size | grad mode | channels_last "
                  "| s measured | s per 189-slice volume | outside the network |",
                  "|---|---:|---:|---|---|---:|---:|---:|"]
        for r in e2e["slice25d"]:
            lines.append(f"| {r['network']}{' (bundle path)' if r.get('default') else ''} | {r['slices']} "
                         f"| {r['sw_batch_size']} | {r['grad_mode']} | {r['channels_last']} | {r['seconds']:.1f} "
                         f"| {r['seconds_per_volume']:.1f} | {r['outside_share']:.1%} |")
    sw = e2e.get("sliding_window_3d")
    if sw and "seconds" in sw:
        lines += ["", f"3D sliding window (UNet3D, volume {'x'.join(map(str, sw['volume']))}, roi "
                  f"{'x'.join(map(str, sw['roi']))}, overlap {sw['overlap']}): {sw['seconds']:.1f} s per volume, "
                  f"{sw['outside_share']:.1%} outside the network."]
    w = e2e.get("wsi")
    if w:
        if "error" in w:
            lines += ["", f"Whole slide: not measured ({w['error']})."]
        else:
            lines += ["", f"Whole slide ({w['height']} x {w['width']}, bench_wsi.py phases, small CBAM-PSPNet): "
                      f"tiling {w['tile']['tiles_per_s']:.2f} tiles/s (1024^2), segmentation "
                      f"{w['segment']['patches_per_s']:.2f} patches/s (network {w['segment']['network_s']:.1f} s of "
                      f"{w['segment']['seconds']:.1f} s)."]
    dl = e2e.get("data_loader")
    if dl:
        lines += ["", f"| data loader ({dl['volumes']} NIfTI volumes {'x'.join(map(str, dl['shape']))}) | build s "
                  "| first epoch samples/s | steady samples/s |", "|---|---:|---:|---:|"]
        for k in ("Dataset", "CacheDataset", "PersistentDataset"):
            lines.append(f"| {k} | {dl[k]['build_s']:.2f} | {dl[k]['first_epoch_samples_per_s']:.2f} "
                         f"| {dl[k]['steady_samples_per_s']:.2f} |")
    lines += ["", "| goal | subject | measured | target | result |", "|---|---|---:|---|---|"]
    for g in results["goals"]:
        lines.append(f"| {g['goal']} | {g['subject']} | {g['value']:.2f} | {g['target']} "
                     f"| {'pass' if g['pass'] else '**fail**'} |")
    return "\n".join(lines) + "\n"


def plots(results: dict[str, Any], folder: str | os.PathLike, prefix: str = "bench") -> list[str]:
    """Bar charts: ratio to peak per network; time inside/outside the network per volume; data-loader samples/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    nets = [r for r in results["networks"] if "formats" in r]
    if nets:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        names = [r["name"] for r in nets]
        pos = range(len(nets))
        for i, (fmt, hatch) in enumerate((("contiguous", ""), ("channels_last", "//"))):
            for j, (kind, color) in enumerate((("forward", "tab:blue"), ("train", "tab:orange"))):
                vals = [r["formats"][fmt][f"{kind}_peak_ratio"] * 100 for r in nets]
                ax.bar([p + (2 * i + j - 1.5) * 0.2 for p in pos], vals, 0.2, color=color, hatch=hatch,
                       edgecolor="black", linewidth=0.4, label=f"{kind}, {fmt}")
        ax.axhline(TRAIN_PEAK_GOAL * 100, color="red", linestyle="--", linewidth=1, label="training goal (60 %)")
        ax.set_xticks(list(pos))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel(f"% of conv peak ({results['reference_gflops']:.0f} GFLOP/s)")
        ax.set_title("Achieved GFLOP/s relative to the machine's 3x3-conv peak")
        ax.legend(fontsize=7, ncol=3)
        fig.tight_layout()
        out.append(save_figure(fig, os.path.join(folder, f"{prefix}_peak_ratio.png")))
    e2e = results.get("end_to_end", {})
    rows = [(f"2.5D {r['network']}" + ("" if r.get("default") else f" (sw {r['sw_batch_size']}, {r['grad_mode']}"
                                        f"{', CL' if r['channels_last'] else ''})"),
             r["network_s"] / r["slices"] * STROKE_DEPTH, (r["seconds"] - r["network_s"]) / r["slices"] * STROKE_DEPTH)
            for r in e2e.get("slice25d", [])]
    sw = e2e.get("sliding_window_3d")
    if sw and "seconds" in sw:
        rows.append(("3D sliding window UNet3D", sw["network_s"], sw["seconds"] - sw["network_s"]))
    if rows:
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
        y = range(len(rows))
        ax.barh(list(y), [r[1] for r in rows], color="tab:blue", label="network")
        ax.barh(list(y), [r[2] for r in rows], left=[r[1] for r in rows], color="tab:gray", label="outside")
        ax.set_yticks(list(y))
        ax.set_yticklabels([r[0] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("seconds per volume")
        ax.set_title("Volume inference: time in and outside the network")
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append(save_figure(fig, os.path.join(folder, f"{prefix}_volume_inference.png")))
    dl = e2e.get("data_loader")
    if dl:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        kinds = ["Dataset", "CacheDataset", "PersistentDataset"]
        ax.bar([k - 0.2 for k in range(3)], [dl[k]["first_epoch_samples_per_s"] for k in kinds], 0.4,
               label="first epoch (incl. caching)")
        ax.bar([k + 0.2 for k in range(3)], [dl[k]["steady_samples_per_s"] for k in kinds], 0.4,
               label="later epochs")
        ax.set_xticks(range(3))
        ax.set_xticklabels(kinds)
        ax.set_ylabel("samples / s")
        ax.set_title("Data loading (NIfTI, resample + normalise, random crop)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        out.append(save_figure(fig, os.path.join(folder, f"{prefix}_data_loader.png")))
    return out


# ------------------------------------------------------------------------------------------------------------ run
def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _progress(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _rescale(results: dict[str, Any]) -> None:
    """Reference = the faster of the conv peaks measured at the start and at the end; every ratio is recomputed."""
    ref = max(results["peak"]["gflops"], results["peak_end"]["gflops"])
    results["reference_gflops"] = ref
    for row in results["networks"]:
        for f in row.get("formats", {}).values():
            for kind in ("forward", "train"):
                if f"{kind}_gflops" in f:
                    f[f"{kind}_peak_ratio"] = f[f"{kind}_gflops"] / ref


def _write_partial(out: Path, results: dict[str, Any]) -> None:
    """The results so far (``"partial": true``), so that an interrupted run leaves what it measured."""
    atomic_write_text(out, json.dumps({**results, "partial": True}, indent=1) + "\n")


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def run(out: str | os.PathLike = "bench/results.json", quick: bool = False, threads: int | None = None,
        compile_: bool = False, networks: Sequence[str] | None = None, repeats: int = 3, min_seconds: float = 2.0,
        slices: int | None = None, end_to_end: bool = True, wsi_size: Sequence[int] | None = None,
        bench_wsi: str | os.PathLike | None = None, plot: bool = True, whole_slide: bool = True,
        max_train_gflop: float | None = None, device: str | torch.device = "cpu",
        amp: bool = False) -> dict[str, Any]:
    """Run the suite and write ``out`` (JSON), ``out`` with ``.md`` (markdown table) and the plots next to it.

    Args:
        out: the JSON results file; the markdown table and the PNG plots go next to it.
        quick: tiny widths and inputs (a smoke run; well under two minutes on two cores).
        threads: ``torch.set_num_threads`` for the run (default: torch's default).
        compile_: also time each network through ``torch.compile`` (slow to compile on a CPU).
        networks: names of :data:`NETWORKS` rows to run (default all); peers and end-to-end rows follow them.
        repeats, min_seconds: at most ``repeats`` timed runs, stopping once ``min_seconds`` have accumulated.
        slices: slices of the 2.5D volumes actually run (default 189; seconds per volume are scaled to 189).
        end_to_end: run the end-to-end measurements.
        wsi_size: (height, width) of the synthetic slide (default 4096 x 4096; 1024 x 1024 in quick mode).
        bench_wsi: path of ``bench_wsi.py`` (default: the source tree's ``bench/bench_wsi.py``).
        whole_slide: run the whole-slide phases (three subprocesses).
        max_train_gflop: run networks whose training step at the paper size counts more GFLOPs at a halved spatial
            size (repeatedly, down to 64; the table marks them) to bound the run time on a slow or loaded machine.
        device: ``"cpu"`` or ``"cuda"`` (timings synchronise the device; peak memory is then torch's device
            allocator peak).
        amp: run forward passes under autocast (float16 on CUDA, bfloat16 on CPU); the peak conv too.
        plot: write the PNG plots.
    """
    import monai

    t_start = time.perf_counter()
    _RUN.update(device=torch.device(device), amp=bool(amp))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    wanted = set(networks) if networks else None
    unknown = (wanted or set()) - {n.name for n in NETWORKS}
    if unknown:
        raise ValueError(f"unknown network(s) {sorted(unknown)}; choose from {[n.name for n in NETWORKS]}")
    if not _reset_peak():
        _progress("note: /proc/self/clear_refs not writable; memory figures are ru_maxrss growth (upper bounds)")
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "monai": monai.__version__, "threads": threads or torch.get_num_threads(), "load_before": _load(),
                    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")},
        "settings": {"quick": quick, "compile": compile_, "repeats": repeats, "min_seconds": min_seconds,
                     "max_train_gflop": max_train_gflop, "slices": slices, "threads": threads,
                     "device": str(torch.device(device)), "amp": bool(amp)},
        "memory_method": ("torch.cuda.max_memory_allocated over the phase's starting allocation"
                          if torch.device(device).type == "cuda"  # ok: reads the --device the user gave
                          else MEMORY_METHOD if _reset_peak() else MEMORY_FALLBACK),
        "networks": [], "peers": [], "end_to_end": {},
    }
    with _threads(threads):
        _progress("conv peak")
        results["peak"] = peak_conv(quick, repeats, min_seconds)
        peak = results["peak"]["gflops"]
        _progress(f"conv peak {peak:.1f} GFLOP/s ({results['peak']['best_format']})")
        for net in NETWORKS:
            if wanted and net.name not in wanted:
                continue
            _progress(f"network {net.name}")
            shape = net.quick_shape if quick else net.input_shape
            row: dict[str, Any] = {"name": net.name, "source": net.source, "conv": net.conv}
            t_row = time.perf_counter()
            try:
                row.update(bench_network(net.quick_build if quick else net.build, shape, peak, repeats, min_seconds,
                                         compile_, None if quick else max_train_gflop, net.resizable))
            except Exception as err:  # noqa: BLE001 - one failing network is reported, the suite goes on
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            row["elapsed_s"] = time.perf_counter() - t_row
            results["networks"].append(row)
            _write_partial(out, results)
        ours = {r["name"]: r for r in results["networks"] if "formats" in r}
        for peer in PEERS:
            if peer.ours not in ours:
                continue
            _progress(f"peer {peer.name}")
            prow: dict[str, Any] = {"ours": peer.ours, "peer": peer.name, "same_architecture": peer.same_architecture,
                                    "note": peer.note}
            why = _importable(peer.requires)
            if why:
                prow["error"] = f"{peer.requires} does not import ({why})"
                results["peers"].append(prow)
                continue
            o = ours[peer.ours]
            try:
                # ours again right before the peer: on a loaded machine the load drifts between the network rows and
                # the peers, and only measurements taken side by side compare
                net = next(n for n in NETWORKS if n.name == peer.ours)
                o = bench_network(net.quick_build if quick else net.build, o["input_shape"], peak, repeats,
                                  min_seconds, resizable=False)
                p = bench_network(peer.quick_build if quick else peer.build, o["input_shape"], peak, repeats,
                                  min_seconds)
            except Exception as err:  # noqa: BLE001 - a peer that fails on our input is reported, not fatal
                prow["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
                results["peers"].append(prow)
                continue
            ob, pb = o["formats"][o["best_format"]], p["formats"][p["best_format"]]
            prow.update({"peer_best_format": p["best_format"], "peer_flops_forward": p["flops_forward"] / o["batch"],
                         "ours_flops_forward": o["flops_forward"] / o["batch"],
                         "ours_forward_s": ob["forward_s_per_sample"], "peer_forward_s": pb["forward_s_per_sample"],
                         "ours_train_s": ob["train_s_per_sample"], "peer_train_s": pb["train_s_per_sample"],
                         "forward_ratio": ob["forward_s_per_sample"] / pb["forward_s_per_sample"],
                         "train_ratio": ob["train_s_per_sample"] / pb["train_s_per_sample"]})
            results["peers"].append(prow)
        _write_partial(out, results)
        if end_to_end:
            results["end_to_end"] = _end_to_end(results, quick, slices, wanted, wsi_size,
                                                bench_wsi if whole_slide else False)
        _progress("conv peak again")
        results["peak_end"] = peak_conv(quick, repeats, min_seconds)
        _rescale(results)
    results["machine"]["load_after"] = _load()
    results["settings"]["elapsed_s"] = time.perf_counter() - t_start
    results["goals"] = goals(results)
    results["table"] = str(out.with_suffix(".md"))
    results["plots"] = plots(results, out.parent, prefix=out.stem) if plot else []
    atomic_write_text(out, json.dumps(results, indent=1) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown(results))
    return results


def _end_to_end(results: dict[str, Any], quick: bool, slices: int | None, wanted: set[str] | None,
                wsi_size: Sequence[int] | None, bench_wsi: str | os.PathLike | None | bool) -> dict[str, Any]:
    e2e: dict[str, Any] = {"slice25d": []}
    by_name = {n.name: n for n in NETWORKS}
    size = 32 if quick else 192
    depth = slices or (24 if quick else STROKE_DEPTH)
    # the bundles' inference path: batched slices (sw_batch_size 16), inference_mode, each network's best format
    for name in ("DUNet", "AGMRNet", "TSRLNet"):
        if wanted and name not in wanted:
            continue
        _progress(f"2.5D volume {name}")
        net = by_name[name]
        model = (net.quick_build if quick else net.build)()
        # the bundles' path: Slice25DInferer(sw_batch_size=16) under MONAI's evaluator (eval_mode: torch.no_grad),
        # contiguous tensors; on D-UNet also each alternative, one change at a time, on the same slices
        rows = [{"default": True, "sw_batch_size": 16, "grad_mode": "no_grad", "channels_last": False}]
        if name == "DUNet":
            rows += [{"sw_batch_size": 1, "grad_mode": "no_grad", "channels_last": False},
                     {"sw_batch_size": 16, "grad_mode": "inference", "channels_last": False},
                     {"sw_batch_size": 16, "grad_mode": "no_grad", "channels_last": True}]
        for opts in rows:
            d = depth
            r = slice25d_volume(model, size, d, opts["sw_batch_size"], opts["grad_mode"], opts["channels_last"])
            r.update(network=name, default=bool(opts.get("default")),
                     seconds_per_volume=r["seconds"] / d * STROKE_DEPTH)
            e2e["slice25d"].append(r)
    if not wanted or "UNet3D (MONAI)" in wanted:
        _progress("3D sliding window")
        net = by_name["UNet3D (MONAI)"]
        torch.manual_seed(0)
        e2e["sliding_window_3d"] = sliding_window_3d(
            (net.quick_build if quick else net.build)(), (40, 40, 40) if quick else (182, 218, 182),
            (16, 16, 16) if quick else (96, 96, 96))
    _progress("data loader")
    with tempfile.TemporaryDirectory(prefix="lesionlab_bench_dl_") as tmp:
        e2e["data_loader"] = data_loader(tmp, 4 if quick else 8, (24, 24, 24) if quick else (160, 192, 160),
                                         (16, 16, 16) if quick else (96, 96, 96))
    if bench_wsi is False:
        return e2e
    _progress("whole slide (bench_wsi.py phases)")
    script = (Path(bench_wsi) if isinstance(bench_wsi, (str, os.PathLike))
              else Path(__file__).resolve().parents[2] / "bench" / "bench_wsi.py")
    h, w = wsi_size or ((1024, 1024) if quick else (4096, 4096))
    e2e["wsi"] = wsi(script, h, w)
    return e2e


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The options of ``lesionlab bench`` / ``python bench/run.py``."""
    p = parser or argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results.json", help="results JSON; the .md table and PNG plots go next to "
                   "it (default: bench/results.json)")
    p.add_argument("--quick", action="store_true", help="tiny widths and inputs: a smoke run (< 2 min)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the run")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on a CPU)")
    p.add_argument("--networks", nargs="+", metavar="NAME", help=f"rows to run (default all: "
                   f"{', '.join(n.name for n in NETWORKS)})")
    p.add_argument("--repeats", type=int, default=3, help="at most this many timed runs per phase (default 3)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="stop timing a phase after this many seconds")
    p.add_argument("--slices", type=int, default=None, help="slices of the 2.5D volumes actually run "
                   f"(default {STROKE_DEPTH}; seconds per volume are scaled to {STROKE_DEPTH})")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--amp", action="store_true", help="forward passes under autocast (float16 on CUDA)")
    p.add_argument("--max-train-gflop", type=float, default=None, help="halve the input size of networks whose "
                   "training step counts more GFLOPs (bounds the run time on a slow machine; default: paper sizes)")
    p.add_argument("--no-end-to-end", action="store_true", help="skip the volume, slide and data-loader rows")
    p.add_argument("--no-wsi", action="store_true", help="skip the whole-slide phases")
    p.add_argument("--wsi-size", type=int, nargs=2, metavar=("H", "W"), help="synthetic slide size (default 4096 4096)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    return p


def main_from_args(args: argparse.Namespace) -> int:
    """Run with parsed options and print the markdown table."""
    res = run(args.out, quick=args.quick, threads=args.threads, compile_=args.compile, networks=args.networks,
              repeats=args.repeats, min_seconds=args.min_seconds, slices=args.slices,
              end_to_end=not args.no_end_to_end, wsi_size=args.wsi_size, plot=not args.no_plots,
              whole_slide=not args.no_wsi, max_train_gflop=args.max_train_gflop,
              device=args.device, amp=args.amp)
    print(Path(res["table"]).read_text())
    print(f"wrote {args.out}, {res['table']}" + "".join(f", {p}" for p in res["plots"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return main_from_args(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
