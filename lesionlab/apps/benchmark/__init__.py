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

Modules:

* :mod:`~lesionlab.apps.benchmark.registry`: :data:`NETWORKS` and :data:`PEERS`, what is measured.
* :mod:`~lesionlab.apps.benchmark.measure`: the run's device and AMP, :class:`PeakMemory`, timings, FLOP counts
  (:func:`conv_flops`, :func:`count_flops`), :func:`peak_conv` and one network's row (:func:`bench_network`).
* :mod:`~lesionlab.apps.benchmark.end_to_end`: 2.5D and 3D volume inference, the data loaders, the whole slide.
* :mod:`~lesionlab.apps.benchmark.report`: :func:`goals`, the markdown tables and the plots.
* :mod:`~lesionlab.apps.benchmark.runner`: :func:`run` and the command line (:func:`build_parser`, :func:`main`).
"""

from __future__ import annotations

from lesionlab.apps.benchmark.end_to_end import STROKE_DEPTH, data_loader, slice25d_volume, sliding_window_3d, wsi
from lesionlab.apps.benchmark.measure import (
    LONG_RUN_S,
    MEMORY_FALLBACK,
    MEMORY_METHOD,
    PeakMemory,
    bench_network,
    conv_flops,
    count_flops,
    peak_conv,
)
from lesionlab.apps.benchmark.registry import NETWORKS, PEERS, BenchNet, Peer
from lesionlab.apps.benchmark.report import OUTSIDE_GOAL, PEER_GOAL, TRAIN_PEAK_GOAL, goals, markdown, plots
from lesionlab.apps.benchmark.runner import build_parser, main, main_from_args, run

__all__ = ["NETWORKS", "PEERS", "BenchNet", "Peer", "conv_flops", "count_flops", "peak_conv", "run", "main"]
