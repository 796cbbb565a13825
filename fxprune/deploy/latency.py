"""Latency of a model on ONNX Runtime and PyTorch: warm-up, then the median of repeated runs.

    x = torch.randn(1, 3, 224, 224)
    timings = measure_side_by_side({"original": torch_runner(model, x, threads=2),
                                    "pruned": torch_runner(small, x, threads=2)})
    print(timings["original"].median_ms / timings["pruned"].median_ms)   # the speedup

Every CPU timing flushes denormals to zero: random or pruned weights produce denormal floats that
slow a CPU several-fold, and a timing taken with them measures the denormals, not the model.
Rounds stop at ``repeats`` or once ``budget_s`` is spent (but never below ``min_repeats``), so a
large model at batch 32 on a small machine costs seconds, not minutes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import export


@dataclass
class Timing:
    median_ms: float
    runs: int


def measure_side_by_side(runners: dict[str, Callable[[], object]], *, warmup: int = 2, repeats: int = 30,
                         min_repeats: int = 3, budget_s: float = 3.0) -> dict[str, Timing]:
    """Time several runners in interleaved rounds (a, b, c, a, b, c, ...) and return each one's median.

    Interleaving makes a load change on a shared machine hit every variant alike, so the ratios
    between them (the speedups) hold even when the absolute figures drift.
    """
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    spent, rounds = 0.0, 0
    while rounds < repeats and (rounds < min_repeats or spent < budget_s):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
            spent += times[name][-1]
        rounds += 1
    return {name: Timing(1000 * statistics.median(t), len(t)) for name, t in times.items()}


def torch_runner(model: torch.nn.Module, example: torch.Tensor, device: str = "cpu",
                 threads: int | None = None) -> Callable[[], object]:
    """A no-grad forward of ``model`` on ``example``; on CUDA each call waits for the GPU to finish."""
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)
    model = model.eval().to(device)
    example = example.to(device)

    def run():
        with torch.inference_mode():
            out = model(example)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return out

    return run


def onnx_runner(path, example: torch.Tensor, threads: int | None = None,
                provider: str = "CPUExecutionProvider") -> Callable[[], object]:
    """One ONNX Runtime inference of ``example`` (denormals flushed; ``threads`` intra-op threads)."""
    sess = export.session(path, threads=threads, provider=provider)
    feed = {sess.get_inputs()[0].name: example.numpy()}
    return lambda: sess.run(None, feed)


RUNTIMES = ("ort-cpu", "torch-cpu", "ort-cuda", "torch-cuda")


def runner(runtime: str, model: torch.nn.Module, onnx_path, example: torch.Tensor, threads: int | None):
    """The runner of ``runtime`` (one of ``RUNTIMES``) for a model and its exported ONNX file."""
    if runtime == "ort-cpu":
        return onnx_runner(onnx_path, example, threads)
    if runtime == "ort-cuda":
        return onnx_runner(onnx_path, example, provider="CUDAExecutionProvider")
    if runtime == "torch-cpu":
        return torch_runner(model, example, "cpu", threads)
    if runtime == "torch-cuda":
        return torch_runner(model, example, "cuda")
    raise ValueError(f"runtime: expected one of {RUNTIMES}, got {runtime!r}")


def usable_runtimes(requested=RUNTIMES) -> tuple[list[str], list[str]]:
    """The requested runtimes this machine can run, and a line for each one skipped."""
    has_cuda = torch.cuda.is_available()
    has_ort_cuda = "CUDAExecutionProvider" in export.available_providers()
    usable, skipped = [], []
    for name in requested:
        if name == "torch-cuda" and not has_cuda:
            skipped.append("torch-cuda skipped: no CUDA")
        elif name == "ort-cuda" and not (has_cuda and has_ort_cuda):
            skipped.append("ort-cuda skipped: no CUDA" if not has_cuda
                           else "ort-cuda skipped: this onnxruntime build has no CUDAExecutionProvider")
        else:
            usable.append(name)
    return usable, skipped
