"""Measuring one thing: the run's device and AMP, peak memory of a phase, timings, FLOP counts, the conv peak and
one network's row (:func:`bench_network`)."""

from __future__ import annotations

import contextlib
import re
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from lesionlab.networks.utils import to_memory_format

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

