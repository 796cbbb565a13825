"""Latency benchmark: original vs fxprune-pruned models on ONNX Runtime and PyTorch, CPU and CUDA.

    python benchmarks/latency.py                    # the full list, ratios 0.25/0.5/0.75, batch 1 and 32
    python benchmarks/latency.py --quick            # two models, ratio 0.5, batch 1 and 8: a minute
    python benchmarks/latency.py mnasnet1_0 resnet34 --ratios 0.5 --profile
    python benchmarks/latency.py mobilenet_v2 --ratios 0.5 --allocation latency --out results/latency_allocation

Every model is pruned (L1, channel counts rounded to 8), exported to ONNX with a parity check, and
timed side by side with its original in interleaved rounds (warm-up, then the median), so a load
change on the machine hits both alike. Denormals are flushed in every CPU run. Results go to
``benchmarks/results/latency.{csv,md,png}``; ``--profile`` adds an ONNX Runtime per-op breakdown
(``profile.md``) that shows where the time of a pruned model goes. ``--allocation latency`` adds, at
each ratio, the model pruned to the same MACs with ``compress(..., allocation="latency")`` (timed in
the same interleaved rounds as the uniform plan and the original).
"""

from __future__ import annotations

import argparse
import os

# OpenMP threads that spin while waiting make PyTorch's CPU timings collapse as soon as another
# process shares the cores; waiting passively costs a little at best and saves a lot at worst.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

import latency_report
import torch
import torch_pruning_peer
import torchvision
from harness import RESULTS, markdown_table, write_csv, write_result
from tqdm import tqdm

import fxprune
from fxprune.deploy import latency
from fxprune.graph.measure import count_macs, count_parameters

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "vgg16_bn",
          "densenet121", "regnet_y_800mf", "convnext_tiny", "shufflenet_v2_x1_0", "vit_b_16"]
QUICK_MODELS = ["resnet18", "mobilenet_v2"]
NARROW = 0.25  # a plan's groups that keep at most this fraction are counted as pruned hard


@dataclass
class Variant:
    method: str  # "original", "fxprune", "fxprune-latency" or "torch-pruning"
    ratio: float
    model: torch.nn.Module
    macs: int
    params: int
    floor_groups: str = ""  # for a plan: groups keeping at most NARROW of their channels / all groups
    same_widths: str = ""  # beside the uniform plan: "yes" if every parameter has the uniform plan's shape

    @property
    def key(self) -> str:
        return f"{self.method}@{self.ratio}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="torchvision model names (default: the list above)")
    parser.add_argument("--quick", action="store_true", help="two models, ratio 0.5, batches 1 and 8")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="CPU threads")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--round-to", type=int, default=8, help="kept channel counts are multiples of this")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per model/runtime/batch "
                                                                  "(at least 3 rounds each)")
    parser.add_argument("--runtimes", nargs="+", default=list(latency.RUNTIMES), choices=latency.RUNTIMES)
    parser.add_argument("--peer-ratios", type=float, nargs="*", default=[0.5],
                        help="ratios at which Torch-Pruning is timed at fxprune's MACs (none: leave it out)")
    parser.add_argument("--profile", action="store_true", help="also write an ORT per-op profile at ratio 0.5")
    parser.add_argument("--allocation", choices=["score", "latency"], default="score",
                        help="latency: also time, at each ratio, the latency-aware plan at the uniform plan's MACs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for latency.{csv,md,png}")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.ratios, args.batches = args.models or QUICK_MODELS, [0.5], [1, 8]
        args.peer_ratios = [0.5]
    args.models = args.models or MODELS
    return args


def floor_groups(plan) -> str:
    """How unevenly a plan prunes: groups that keep at most ``NARROW`` of their channels / all groups."""
    return f"{sum(len(g.keep) <= NARROW * len(g.indices) for g in plan.groups)}/{len(plan.groups)}"


def build_variants(name: str, example: torch.Tensor, ratios, peer_ratios, round_to: int = 8,
                   allocation: str = "score") -> tuple[list[Variant], list[str]]:
    """The original, fxprune at each ratio (and its latency-aware plan at the same MACs when asked),
    and Torch-Pruning at fxprune's MACs where asked."""
    model = torchvision.models.get_model(name, weights=None).eval()
    inputs = (example,)

    def variant(method, ratio, module):
        plan = getattr(module, "fxprune_plan", None)
        return Variant(method, ratio, module.eval(), count_macs(module, inputs), count_parameters(module),
                       floor_groups(plan) if plan is not None else "")

    variants, notes = [variant("original", 0.0, model)], []
    for ratio in ratios:
        small = fxprune.compress(model, example, ratio=ratio, round_to=round_to, method="l1")
        uniform = variant("fxprune", ratio, small)
        variants.append(uniform)
        if allocation == "latency":
            aware = fxprune.compress(model, example, ratio=ratio, round_to=round_to, allocation="latency",
                                     method="l1")
            variants.append(compared(variant("fxprune-latency", ratio, aware), uniform))
        if ratio in peer_ratios:
            try:
                peer, _ = torch_pruning_peer.prune_to_macs(model, example, uniform.macs, ratio, round_to)
                variants.append(compared(variant("torch-pruning", ratio, peer), uniform))
            except Exception as error:  # noqa: BLE001 — the peer failing is a result to report
                notes.append(f"{name}: Torch-Pruning failed at ratio {ratio}: {type(error).__name__}: "
                             f"{str(error).splitlines()[0][:200] if str(error) else ''}")
    return variants, notes


def compared(other: Variant, uniform: Variant) -> Variant:
    """Mark whether ``other`` has exactly the uniform plan's parameter shapes: then the two are one
    architecture, and any difference in their timings is noise."""
    def shapes(v):
        return sorted(tuple(p.shape) for p in v.model.parameters())
    other.same_widths = "yes" if shapes(other) == shapes(uniform) else "no"
    return other


def export_variants(name, variants, example, folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Export each variant with the parity check; a failure drops it from the ONNX timings, noted."""
    paths, notes = {}, []
    for v in variants:
        path = folder / f"{name}-{v.key}.onnx"
        try:
            result = fxprune.export_onnx(v.model, (example,), path)
            paths[v.key] = path
            notes.append(f"{name} {v.key}: export parity {result.relative:.1e} relative ({result.exporter})")
        except fxprune.FxpruneError as error:
            notes.append(f"{name} {v.key}: EXPORT FAILED: {str(error).splitlines()[0]}")
    return paths, notes


def time_variants(name, variants, paths, runtime, batch, args) -> list[dict]:
    example = torch.randn(batch, 3, args.size, args.size)
    ready = [v for v in variants if not runtime.startswith("ort") or v.key in paths]
    runners = {v.key: latency.runner(runtime, v.model, paths.get(v.key), example, args.threads) for v in ready}
    timings = latency.measure_side_by_side(runners, warmup=1 if batch > 8 else 3, budget_s=args.budget)
    original = next(v for v in ready if v.method == "original")
    base_ms = timings[original.key].median_ms
    rows = []
    for v in ready:
        ms = timings[v.key].median_ms
        macs_factor = original.macs / v.macs
        rows.append(dict(model=name, method=v.method, ratio=v.ratio, macs=v.macs, macs_factor=macs_factor,
                         params=v.params, runtime=runtime, batch=batch, latency_ms=ms, speedup=base_ms / ms,
                         efficiency=base_ms / ms / macs_factor, runs=timings[v.key].runs,
                         floor_groups=v.floor_groups, same_widths=v.same_widths))
    if runtime == "torch-cuda":  # the CPU runtimes of the next batch need the models back
        for v in ready:
            v.model.to("cpu")
    return rows


def profile(name, variants, paths, args) -> list[str]:
    """Per-op-kind ORT time of the original and each ratio-0.5 plan, at the largest batch."""
    pruned = [v for v in variants if v.method.startswith("fxprune") and v.ratio == 0.5 and v.key in paths]
    if not pruned or "original@0.0" not in paths:
        return []
    example = (torch.randn(max(args.batches), 3, args.size, args.size),)
    before = fxprune.deploy.export.profile_ops(paths["original@0.0"], example, args.threads)
    return [line for v in pruned for line in _profile_table(name, v, variants[0], before, paths, example, args)]


def _profile_table(name, pruned, original, before, paths, example, args) -> list[str]:
    after = fxprune.deploy.export.profile_ops(paths[pruned.key], example, args.threads)
    macs_factor = original.macs / pruned.macs
    cells = []
    for kind in sorted(before, key=lambda k: -before[k]):
        b, a = before[kind], after.get(kind, 0.0)
        cells.append([kind, f"{b:.2f}", f"{a:.2f}", f"{b / a if a else float('inf'):.2f}×",
                      f"{a / max(sum(after.values()), 1e-9):.0%}"])
    columns = ["op kind", "original ms", "pruned ms", "speedup", "share of pruned time"]
    return [f"### {name}, {pruned.method}, ratio 0.5, batch {max(args.batches)} (MACs factor {macs_factor:.2f}; "
            f"total {sum(before.values()):.1f} → {sum(after.values()):.1f} ms)", "", markdown_table(columns, cells), ""]


def settings(args, skipped) -> list[str]:
    return [f"threads: {args.threads} (ORT intra-op and torch.set_num_threads), {os.cpu_count()} CPU cores "
            f"visible, {platform.processor() or platform.machine()}",
            f"torch {torch.__version__}, onnxruntime {fxprune.deploy.export.runtime_version()}, "
            f"input {args.size}×{args.size}, "
            f"batches {args.batches}, L1 criterion, round_to={args.round_to}, random weights, denormals flushed",
            f"timing: interleaved rounds, warm-up, median; ≥3 rounds and ~{args.budget:.0f} s per cell; "
            f"ORT threads do not spin, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
            *skipped]


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    runtimes, skipped = latency.usable_runtimes(args.runtimes)
    has_peer, peer_note = torch_pruning_peer.available()
    skipped += [] if has_peer else [peer_note]
    for line in skipped:
        print(line)
    rows, notes, profiles = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for name in tqdm(args.models, desc="models"):
            example = torch.randn(1, 3, args.size, args.size)
            peer_ratios = args.peer_ratios if has_peer else []
            variants, peer_notes = build_variants(name, example, args.ratios, peer_ratios, args.round_to,
                                                  args.allocation)
            paths, export_notes = export_variants(name, variants, example, Path(folder))
            notes += peer_notes + export_notes
            for runtime in runtimes:
                for batch in args.batches:
                    rows += time_variants(name, variants, paths, runtime, batch, args)
            profiles += profile(name, variants, paths, args) if args.profile else []
            for path in paths.values():
                path.unlink(missing_ok=True)
            write_results(args, rows, settings(args, skipped), notes, profiles, quiet=True)  # partial results
    write_results(args, rows, settings(args, skipped), notes, profiles)


def write_results(args, rows, header, notes, profiles, quiet=False) -> None:
    write_csv("latency.csv", latency_report.FIELDS, rows, args.out)
    latency_report.write_markdown(rows, header, args.batches, args.out / "latency.md")
    latency_report.write_plot(rows, args.out / "latency.png")
    write_result("exports.md", "# ONNX export parity\n\n" + "\n".join(f"* {n}" for n in notes) + "\n", args.out)
    if profiles:
        write_result("profile.md", "# ONNX Runtime time per op kind\n\n" + "\n".join(profiles), args.out)
    if not quiet:
        print((args.out / "latency.md").read_text())


if __name__ == "__main__":
    main()
