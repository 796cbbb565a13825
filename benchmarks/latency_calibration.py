"""Fit the latency model's one constant, ``fxprune.cost.ELEMENT_COST``, to measured ONNX Runtime times.

    python benchmarks/latency_calibration.py                         # six models, batch 8, one thread
    python benchmarks/latency_calibration.py resnet50 --batch 32 --threads 2
    python benchmarks/latency_calibration.py --threads 2 --compare-plans 10 30  # same speed?
    python benchmarks/latency_calibration.py --threads 2 --widths              # narrow layers' rate

Each model is timed on ONNX Runtime CPU as it is and pruned uniformly at each ratio (side by side,
interleaved rounds). The latency model splits every variant's modelled cost into MACs and element
traffic; a fit of ``time ≈ scale_model · (MACs + k·elements)`` (one scale per model, one ``k`` for
all, least squares on log times) gives ``k``: the cost of one element read or written, in MACs, on
this machine and runtime. Fitting ratios within each model keeps load changes between models out.

``--compare-plans K ...`` asks whether the fitted value matters: for each model, the uniform plan at
ratio 0.5 and the latency plans built with each ``K`` at the same MACs, timed side by side with the
original at batches 1 and 32. ``--widths`` asks where the model stops holding: one convolution
(``w`` to ``w`` channels, 1×1 or 3×3) timed at growing widths, its measured MACs per second beside
the rate the model gives it, MACs / (MACs + ELEMENT_COST · elements), both relative to the widest.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from harness import markdown_header, markdown_row

import fxprune
from fxprune.analysis.analyze import analyze_graph
from fxprune.choose.cost import LatencyModel
from fxprune.choose.plan import anchor_member
from fxprune.deploy import latency
from fxprune.graph.tensors import param_name
from fxprune.pipeline import traced

MODELS = ["mobilenet_v2", "efficientnet_b0", "regnet_y_800mf", "convnext_tiny", "densenet121", "resnet18"]


def modelled_terms(model, example, plans) -> list[tuple[float, float]]:
    """(MACs, element traffic) of the latency model for each plan (None: the original)."""
    analysis = analyze_graph(traced(model, (example,)))
    costs = LatencyModel(analysis, (example,), element_cost=1.0)
    terms = []
    anchors = [anchor_member(g, analysis).ref for g in analysis.groups]
    for plan in plans:
        kept = {} if plan is None else {(g.anchor, g.dim): len(g.keep) / len(g.indices) for g in plan.groups}
        fractions = np.array([[kept.get((param_name(a.key), a.dim), 1.0) for a in anchors]])
        macs = costs.macs.estimate_fractions(fractions)[0]
        terms.append((macs, costs.estimate_fractions(fractions)[0] - macs))
    return terms


def measure(name: str, args, folder: Path) -> list[tuple[str, float, float, float]]:
    """(variant, MACs, elements, median ms) for the original and each uniform ratio."""
    model = torchvision.models.get_model(name, weights=None).eval()
    example = torch.randn(1, 3, args.size, args.size)
    variants = {"original": model} | {f"uniform@{r}": fxprune.compress(model, example, ratio=r) for r in args.ratios}
    paths = {}
    for key, module in variants.items():
        paths[key] = folder / f"{name}-{key}.onnx"
        fxprune.export_onnx(module, (example,), paths[key])
    batch = torch.randn(args.batch, 3, args.size, args.size)
    runners = {key: latency.onnx_runner(path, batch, args.threads) for key, path in paths.items()}
    timings = latency.measure_side_by_side(runners, warmup=1, budget_s=args.budget)
    plans = [getattr(module, "fxprune_plan", None) if key != "original" else None for key, module in variants.items()]
    terms = modelled_terms(model, example, plans)
    return [(key, macs, elements, timings[key].median_ms) for key, (macs, elements) in zip(variants, terms)]


def compare_plans(name: str, args, folder: Path) -> list[str]:
    """Table rows: speedup over the original of the uniform plan and of the latency plan built with
    each element cost in ``args.compare_plans``, at batches 1 and 32."""
    model = torchvision.models.get_model(name, weights=None).eval()
    example = torch.randn(1, 3, args.size, args.size)
    variants = {"original": model, "uniform": fxprune.compress(model, example, ratio=0.5)}
    fitted = fxprune.cost.ELEMENT_COST
    try:
        for k in args.compare_plans:
            fxprune.cost.ELEMENT_COST = k
            variants[f"k={k:g}"] = fxprune.compress(model, example, ratio=0.5, allocation="latency")
    finally:
        fxprune.cost.ELEMENT_COST = fitted
    paths = {key: folder / f"{name}-{key}.onnx" for key in variants}
    for key, module in variants.items():
        fxprune.export_onnx(module, (example,), paths[key])
    cells = [name]
    for batch in (1, 32):
        inputs = torch.randn(batch, 3, args.size, args.size)
        runners = {key: latency.onnx_runner(path, inputs, args.threads) for key, path in paths.items()}
        timings = latency.measure_side_by_side(runners, warmup=1, budget_s=args.budget)
        base = timings["original"].median_ms
        cells += [f"{base / timings[key].median_ms:.2f}×" for key in variants if key != "original"]
    return cells


WIDTHS = (8, 16, 24, 32, 48, 64, 128, 256)


def width_rates(kernel: int, size: int, args, folder: Path) -> list[str]:
    """Table rows: one ``w``→``w`` convolution (then ReLU) per width, at ``args.batch`` and ``size``²."""
    rates = []
    for width in WIDTHS:
        layer = torch.nn.Sequential(torch.nn.Conv2d(width, width, kernel, padding=kernel // 2), torch.nn.ReLU())
        inputs = torch.randn(args.batch, width, size, size)
        path = folder / f"conv{kernel}-{width}.onnx"
        fxprune.export_onnx(layer.eval(), (inputs[:1],), path)
        runner = latency.onnx_runner(path, inputs, args.threads)
        ms = latency.measure_side_by_side({"conv": runner}, warmup=2, budget_s=args.budget / 4)["conv"].median_ms
        macs = args.batch * width * width * kernel * kernel * size * size
        elements = 2 * args.batch * width * size * size  # read and written once each
        rates.append((width, macs / ms / 1e6, macs / (macs + fxprune.cost.ELEMENT_COST * elements)))
    _, top_measured, top_modelled = rates[-1]
    return [markdown_row([f"{kernel}×{kernel}", size, width, f"{measured:.1f}", f"{measured / top_measured:.2f}",
                          f"{modelled / top_modelled:.2f}"]) for width, measured, modelled in rates]


def fit(rows) -> tuple[float, dict[str, float]]:
    """The element cost k, and a time scale per model, for time = scale·(MACs + k·elements).

    Only ratios within one model count (each model's variants were timed side by side, so a load
    change between models does not move k): least squares on log times over a grid of k.
    """
    grid = np.concatenate([np.linspace(0, 20, 201), np.linspace(20.5, 200, 360)])
    models = sorted({row[0] for row in rows})

    def residuals(k):
        scales, error = {}, 0.0
        for name in models:
            logs = np.array([np.log(ms) - np.log(macs + k * elements)
                             for n, _, macs, elements, ms in rows if n == name])
            scales[name] = float(np.exp(logs.mean()))
            error += float(((logs - logs.mean()) ** 2).sum())
        return error, scales

    best = min(grid, key=lambda k: residuals(k)[0])
    return float(best), residuals(best)[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--budget", type=float, default=4.0)
    parser.add_argument("--compare-plans", type=float, nargs="+", metavar="K",
                        help="time latency plans built with each element cost K beside the uniform plan")
    parser.add_argument("--widths", action="store_true", help="measured against modelled rate of narrow convolutions")
    args = parser.parse_args(argv)
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    if args.widths:
        print(markdown_header(["conv", "size", "width", "measured GMAC/s", "measured, of widest",
                               "modelled, of widest"]))
        with tempfile.TemporaryDirectory() as folder:
            for kernel, size in ((1, 28), (3, 28), (1, 56)):
                print("\n".join(width_rates(kernel, size, args, Path(folder))), flush=True)
        return
    if args.compare_plans:
        plans = ["uniform", *(f"k={k:g}" for k in args.compare_plans)]
        print(markdown_header(["model", *(f"b{b} {p}" for b in (1, 32) for p in plans)]))
        with tempfile.TemporaryDirectory() as folder:
            for name in args.models:
                print(markdown_row(compare_plans(name, args, Path(folder))), flush=True)
        return
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            rows += [(name, *row) for row in measure(name, args, Path(folder))]
    element_cost, scales = fit(rows)
    print(markdown_header(["model", "variant", "MACs (G)", "elements (M)", "measured ms", "fitted ms"]))
    for name, key, macs, elements, ms in rows:
        fitted = scales[name] * (macs + element_cost * elements)
        print(markdown_row([name, key, f"{macs / 1e9:.3f}", f"{elements / 1e6:.1f}", f"{ms:.1f}", f"{fitted:.1f}"]))
    print(f"\nELEMENT_COST fitted: {element_cost:.1f} MACs per element read or written "
          f"(ORT CPU, {args.threads} thread(s), batch {args.batch})")


if __name__ == "__main__":
    main()
