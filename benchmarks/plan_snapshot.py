"""A fingerprint of what fxprune decides, to tell a refactor that changes nothing from one that does.

    python benchmarks/plan_snapshot.py before.json          # at one commit
    python benchmarks/plan_snapshot.py after.json           # at another
    python benchmarks/plan_snapshot.py --compare before.json after.json

For a fixed set of runs — l1 at ratio 0.5 on 19 torchvision families, MACs budgets (score and
latency allocation), taylor with the least-squares refit, reconstruction with BatchNorm
recalibration, MLACP, and the latency model's modelled cost of 12 models — it records the plan
(JSON), the pruned model's output sum and parameter count, and the modelled cost. Two snapshots
are equal exactly when every plan, every output and every modelled cost is. Random weights are
seeded; one thread, so sums do not depend on the thread count.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

import torch
import torchvision

import fxprune

try:
    from fxprune.analysis.analyze import analyze_graph
    from fxprune.choose.cost import LatencyModel
    from fxprune.pipeline import evaluating, traced
except ImportError:  # commits before the layout by stage (d1a934b and older), to compare across it
    from fxprune.analysis import analyze_graph  # noqa: I001
    from fxprune.compress import evaluating, traced
    from fxprune.cost import LatencyModel

CLASSIFIERS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121",
               "shufflenet_v2_x0_5", "regnet_y_400mf", "resnext50_32x4d", "convnext_tiny", "vit_b_16", "swin_t",
               "squeezenet1_0", "googlenet", "mnasnet0_5", "maxvit_t", "inception_v3", "vgg11_bn", "alexnet"]
LATENCY_MODELS = ["resnet18", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "densenet121",
                  "convnext_tiny", "regnet_y_800mf", "shufflenet_v2_x1_0", "vit_b_16", "swin_t", "googlenet",
                  "maxvit_t"]


def _fingerprint(small: torch.nn.Module, x: torch.Tensor) -> list:
    with torch.no_grad():
        y = small(x)
    y = y if isinstance(y, torch.Tensor) else y[0]
    return [small.fxprune_plan.to_json(), float(y.double().sum()), sum(p.numel() for p in small.parameters())]


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


def _classifiers() -> dict:
    runs = {}
    for name in CLASSIFIERS:
        size = 299 if name == "inception_v3" else 224
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        runs[name] = _fingerprint(fxprune.compress(_model(name), x, ratio=0.5, round_to=1), x)
        print(name, file=sys.stderr, flush=True)
    return runs


def _methods() -> dict:
    model, x = _model("mobilenet_v2"), torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([1, 2])
    runs = {"mobilenet_v2 latency": fxprune.compress(model, x, target_macs=0.4, allocation="latency"),
            "mobilenet_v2 macs l2": fxprune.compress(model, x, target_macs=0.4, method="l2"),
            "mobilenet_v2 taylor refit": fxprune.compress(model, (x, labels), ratio=0.3, method="taylor", refit=True)}
    runs = {key: _fingerprint(small, x) for key, small in runs.items()}
    model, x = _model("resnet18"), torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    data = (x, torch.tensor([1, 2, 3, 4]))
    runs["resnet18 reconstruction"] = _fingerprint(
        fxprune.compress(model, data, ratio=0.5, method="reconstruction", recalibrate_bn=True), x)
    runs["resnet18 mlacp"] = _fingerprint(fxprune.compress(model, data, ratio=0.5, method=fxprune.MLACP(steps=2)), x)
    return runs


def _latency_models() -> dict:
    costs = {}
    for name in LATENCY_MODELS:
        model, x = _model(name), torch.randn(1, 3, 224, 224)
        with evaluating(model):
            analysis = analyze_graph(traced(model, (x,)))
        costs[f"{name} modelled cost"] = LatencyModel(analysis, (x,)).total
    return costs


def _compare(before: str, after: str) -> int:
    old, new = json.load(open(before)), json.load(open(after))
    changed = [key for key in old if old[key] != new.get(key)] + [key for key in new if key not in old]
    print(f"{len(old)} runs; changed: {', '.join(changed) if changed else 'none'}")
    return 1 if changed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", help="where to write the snapshot (JSON)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        return _compare(*args.compare)
    if not args.output:
        parser.error("give an output file, or --compare BEFORE AFTER")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    snapshot = {**_classifiers(), **_methods(), **_latency_models()}
    with open(args.output, "w") as handle:
        json.dump(snapshot, handle, indent=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
