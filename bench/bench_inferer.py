"""Benchmark of Slice25DInferer: time and peak memory against the number of slices.

The inferer keeps one batch of 2.5D stacks alive at a time and writes into one preallocated output volume, so the
extra memory beyond input + output should not grow with depth. The script records the largest batch of stacks the
network receives (constant in depth), the output volume's size (linear in depth, unavoidable) and the process's
peak RSS.

Run: ``.venv/bin/python bench/bench_inferer.py [--features 16 32 64 128 256]``
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from lesionlab.networks import DUNet
from lesionlab.pipelines.inferers import Slice25DInferer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, nargs=5, default=[8, 16, 32, 64, 128])
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--sw-batch-size", type=int, default=16)
    args = ap.parse_args()
    net = DUNet(features=tuple(args.features)).eval()
    inferer = Slice25DInferer(sw_batch_size=args.sw_batch_size, activation="sigmoid")
    print(f"D-UNet features {args.features}, slices {args.size}x{args.size}, sw_batch_size {args.sw_batch_size}")
    print(f"{'depth':>6} {'seconds':>8} {'s/slice':>8} {'max stack MiB':>14} {'output MiB':>11} {'RSS MiB':>8}")
    for depth in (16, 64, 189):
        peak = {"bytes": 0}

        def wrapped(x: torch.Tensor, _peak=peak) -> torch.Tensor:
            _peak["bytes"] = max(_peak["bytes"], x.numel() * x.element_size())
            return net(x)

        vol = torch.rand(1, 1, args.size, args.size, depth)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = inferer(vol, wrapped)
        dt = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{depth:>6} {dt:>8.2f} {dt / depth:>8.3f} {peak['bytes'] / 2**20:>14.1f} "
              f"{out.numel() * out.element_size() / 2**20:>11.1f} {rss:>8.0f}")


if __name__ == "__main__":
    main()
