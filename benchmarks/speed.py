"""How long fxprune's structural work takes: trace + shapes, analysis, rewrite (criterion excluded).

    python benchmarks/speed.py                  # resnet50 and densenet201, median of 5 runs
    python benchmarks/speed.py swin_t vit_b_16  # any torchvision models
    python benchmarks/speed.py --scaling        # fit seconds against graph size from coverage.csv
    python benchmarks/speed.py --peer           # Torch-Pruning's structural pass timed in the same run

Each stage is timed separately; the rewrite includes its own check (one forward pass of the pruned
model on the example, on ``meta`` tensors). The peer's time is its ``MagnitudePruner`` (dependency
graph) plus ``step()`` at ratio 0.5 on a fresh copy, its L1 importance included. Denormals are
flushed so random weights do not slow the forward passes.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import statistics
import time

import torch
import torchvision
from harness import RESULTS, markdown_header, markdown_row

from fxprune.analysis.analyze import analyze_graph
from fxprune.choose.criteria import get_criterion
from fxprune.choose.plan import kept_count, plan_from_scores
from fxprune.pipeline import evaluating, traced
from fxprune.rewrite.apply import rewrite


def _model_and_inputs(name: str) -> tuple[torch.nn.Module, tuple]:
    size = 299 if name == "inception_v3" else 224
    return torchvision.models.get_model(name, weights=None).eval(), (torch.randn(1, 3, size, size),)


def time_stages(name: str, repeats: int) -> dict:
    model, inputs = _model_and_inputs(name)
    stages = {"trace_and_shapes": [], "analyze": [], "rewrite": []}
    for _ in range(repeats):
        with evaluating(model):
            start = time.perf_counter()
            gm = traced(model, inputs)
            traced_at = time.perf_counter()
            analysis = analyze_graph(gm)
            analysed_at = time.perf_counter()
            scores = get_criterion("l1")(analysis, None)
            plan = plan_from_scores(analysis, scores, [kept_count(g.size, 0.5, 1) for g in analysis.groups])
            planned_at = time.perf_counter()
            rewrite(analysis, plan, inputs)
            done = time.perf_counter()
        stages["trace_and_shapes"].append(traced_at - start)
        stages["analyze"].append(analysed_at - traced_at)
        stages["rewrite"].append(done - planned_at)
    row = {stage: statistics.median(times) for stage, times in stages.items()}
    row.update(model=name, nodes=len(gm.graph.nodes), slots=analysis.table.total, total=sum(row.values()))
    return row


def time_peer(name: str, repeats: int) -> float:
    """Median seconds of Torch-Pruning's dependency graph + pruning step on a fresh copy of the model."""
    import torch_pruning_peer

    model, (example,) = _model_and_inputs(name)
    keep = {id(m) for m in torch_pruning_peer.output_layers(model, example)}
    times = []
    for _ in range(repeats):
        fresh = copy.deepcopy(model)
        ignored = [m for original, m in zip(model.modules(), fresh.modules()) if id(original) in keep]
        start = time.perf_counter()
        torch_pruning_peer.pruner(fresh, example, 0.5, ignored, round_to=None).step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scaling() -> None:
    """Least-squares slope of log(analysis+rewrite seconds) against log(graph nodes) over the sweep."""
    rows = [r for r in csv.DictReader(open(RESULTS / "coverage.csv")) if r["status"] == "ok"]
    xs = [math.log(float(r["nodes"])) for r in rows]
    ys = [math.log(float(r["analyze_rewrite_s"])) for r in rows]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    print(f"{len(rows)} models: analysis+rewrite seconds grow as nodes^{slope:.2f} "
          f"(nodes {min(int(r['nodes']) for r in rows)}..{max(int(r['nodes']) for r in rows)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["resnet50", "densenet201"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--peer", action="store_true", help="also time Torch-Pruning (pip install -e \".[bench]\")")
    args = parser.parse_args()
    if args.scaling:
        return scaling()
    torch.set_flush_denormal(True)
    print(f"threads: {torch.get_num_threads()}")
    columns = ["model", "nodes", "slots", "trace+shapes s", "analyze s", "rewrite s", "total s"]
    columns += ["Torch-Pruning s", "its time ÷ ours"] if args.peer else []
    print(markdown_header(columns))
    for name in args.models:
        r = time_stages(name, args.repeats)
        seconds = [f"{r[stage]:.3f}" for stage in ("trace_and_shapes", "analyze", "rewrite", "total")]
        cells = [r["model"], r["nodes"], r["slots"], *seconds]
        if args.peer:
            peer_seconds = time_peer(name, args.repeats)
            cells += [f"{peer_seconds:.3f}", f"{peer_seconds / r['total']:.1f}x"]
        print(markdown_row(cells), flush=True)


if __name__ == "__main__":
    main()
