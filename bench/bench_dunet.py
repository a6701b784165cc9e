"""Complexity and CPU speed of D-UNet (seed 002, thesis Table 4.3).

Prints the parameter count, the operation counts on one input (thop-style MACs in both thop conventions, PyTorch's
FLOPs and MACs; see ``lesionlab.pipelines.complexity`` for what each counts), then CPU timings of

- forward, eval mode, no grad, batch 1 and batch 16,
- forward + backward, train mode, batch 8,

as the median of ``--repeats`` runs after ``--warmup`` runs, with the process's peak resident set size so far after
each phase (``resource.getrusage``; it never decreases). Threads: torch's default unless ``--threads`` is given.

Usage::

    .venv/bin/python bench/bench_dunet.py
    .venv/bin/python bench/bench_dunet.py --features 16 32 64 128 256   # half-width variant
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch

from lesionlab.networks.nets import DUNet
from lesionlab.pipelines.complexity import count_flops_torch, count_macs_thop_style, count_parameters

__all__ = ["main"]


def _peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _median_seconds(fn: Callable[[], None], repeats: int, warmup: int) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _giga(n: int) -> str:
    return f"{n:>15,d}  ({n / 1e9:.3f} G)"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=int, nargs=5, default=[32, 64, 128, 256, 512], help="encoder widths")
    parser.add_argument("--slices", type=int, default=4, help="in_channels: stacked slices (default 4)")
    parser.add_argument("--size", type=int, default=192, help="square input size (default 192)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--eval-batches", type=int, nargs="+", default=[1, 16], help="forward batch sizes")
    parser.add_argument("--train-batch", type=int, default=8, help="forward+backward batch size (0 skips)")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fusion_reduction = 16 if args.features[1] // 16 >= 1 else max(1, args.features[1] // 2)
    net = DUNet(in_channels=args.slices, features=args.features, fusion_reduction=fusion_reduction)
    shape = (1, args.slices, args.size, args.size)

    print(f"D-UNet features={tuple(args.features)} in_channels={args.slices} fusion_reduction={fusion_reduction}")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads={torch.get_num_threads()}")
    print()
    print(f"parameters (trainable)                 {count_parameters(net):>15,d}")
    print(f"operation counts on {'x'.join(map(str, shape))}:")
    print(f"  thop-style MACs, conv only, legacy   {_giga(count_macs_thop_style(net, shape, device='meta'))}")
    print("      thop<=0.0.31: conv & transposed conv per OUTPUT element, cin/groups*prod(k) + 1 if bias")
    print(f"  thop-style MACs, conv only, current  "
          f"{_giga(count_macs_thop_style(net, shape, convention='current', device='meta'))}")
    print("      thop>=0.1: as above without the bias term")
    print(f"  thop-style MACs, all layers, legacy  "
          f"{_giga(count_macs_thop_style(net, shape, convs_only=False, device='meta'))}")
    print("      + BatchNorm 2*numel, Linear in*out, SE AdaptiveAvgPool (window+1)*out; ReLU/MaxPool 0")
    flops = count_flops_torch(net, shape, device="meta")
    print(f"  torch FlopCounterMode FLOPs          {_giga(flops)}")
    print(f"  torch MACs (FLOPs / 2)               {_giga(flops // 2)}")
    print("      convolutions and matmuls only, transposed conv per INPUT element, no bias/BN/activations")
    if tuple(args.features) == (32, 64, 128, 256, 512) and args.slices == 4 and args.size == 192:
        # = legacy convolutions + BatchNorm + Linear, i.e. "all layers, legacy" without the SE pools
        print(f"  thesis Table 4.3 (D-UNet)            {_giga(18_089_374_976)}")
    print()

    print(f"CPU timing, median of {args.repeats} (after {args.warmup} warm-up), peak RSS so far")
    print(f"  {'phase':<34} {'median s':>9} {'img/s':>8} {'peak RSS MiB':>13}   runs")
    net.eval()
    for batch in args.eval_batches:
        x = torch.randn(batch, args.slices, args.size, args.size)

        def forward(x: torch.Tensor = x) -> None:
            with torch.no_grad():
                net(x)

        med, runs = _median_seconds(forward, args.repeats, args.warmup)
        print(f"  {f'forward eval, batch {batch}':<34} {med:>9.3f} {batch / med:>8.1f} {_peak_rss_mib():>13.0f}   "
              + " ".join(f"{t:.3f}" for t in runs))
        del x
    if args.train_batch > 0:
        net.train()
        x = torch.randn(args.train_batch, args.slices, args.size, args.size)

        def step() -> None:
            net.zero_grad(set_to_none=True)
            net(x).float().mean().backward()

        med, runs = _median_seconds(step, args.repeats, args.warmup)
        print(f"  {f'forward+backward train, batch {args.train_batch}':<34} {med:>9.3f} {args.train_batch / med:>8.1f} "
              f"{_peak_rss_mib():>13.0f}   " + " ".join(f"{t:.3f}" for t in runs))


if __name__ == "__main__":
    main()
