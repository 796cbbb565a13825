"""Quality benchmark: accuracy kept at equal MACs by every fxprune method and by Torch-Pruning.

    python benchmarks/quality.py                       # generated task, ResNet-20 and VGG, 3 seeds
    python benchmarks/quality.py --data digits                 # scikit-learn's handwritten digits (real, no download)
    python benchmarks/quality.py --data cifar10 --root PATH
    python benchmarks/quality.py --timing              # MLACP seconds vs depth and calibration size (mlacp_time.md)
    python benchmarks/quality.py --models mobilenet-small --allocations score latency   # uniform vs latency-aware

For each baseline (trained once, cached under results/cache/), each seed (which calibration images
are drawn) and each MACs target, every method prunes to the same MACs with the same calibration
data; all pruned models get the same BatchNorm recalibration. Reported: test accuracy with no
fine-tuning, after the least-squares refit, and after one identical short fine-tuning budget
(distillation from the baseline on the calibration images), with the seconds each took.
``l1+kd`` is ``l1`` distilled for MLACP's seconds; its fine-tuned column is ``l1`` distilled once
(one learning-rate schedule) for MLACP's seconds and MLACP's fine-tuning's together.
fxprune's methods use one ratio for every group (the one that meets the target), as Torch-Pruning
does here, so the criteria are compared on equal allocations. ``--allocations score latency`` also
prunes with ``allocation="latency"`` at the MACs that ratio reaches (met within 1%; Torch-Pruning runs
under ``score`` only), reported as e.g. ``l1 (latency)``. Writes results/quality.md and .png.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

import torch_pruning_peer  # noqa: E402
from harness import RESULTS, markdown_header, markdown_row, write_result  # noqa: E402
from quality_data import cifar10, digits, generate  # noqa: E402
from quality_models import MODELS  # noqa: E402
from quality_report import label, write_report  # noqa: E402
from quality_training import accuracy, cached_baseline  # noqa: E402

import fxprune  # noqa: E402
from fxprune.analysis.analyze import analyze_graph  # noqa: E402
from fxprune.analysis.sites import group_sites  # noqa: E402
from fxprune.choose.allocation import MacsModel, uniform_counts_at  # noqa: E402
from fxprune.choose.mlacp import TERMS  # noqa: E402
from fxprune.choose.mlacp.losses import DEFAULT_TERMS  # noqa: E402
from fxprune.graph.inputs import as_batches  # noqa: E402
from fxprune.graph.measure import count_macs  # noqa: E402
from fxprune.pipeline import evaluating, traced  # noqa: E402
from fxprune.recover.batchnorm import recalibrate_bn  # noqa: E402

CRITERIA = ("l1", "l2", "bn_scale", "taylor", "random", "reconstruction")
ABLATIONS = ("mlacp-r", "mlacp-rg", "mlacp-rc", "mlacp-rgc", "mlacp")  # the paper's Table 2, then the default
PEERS = {"tp_magnitude": "l2", "tp_taylor": "taylor"}  # Torch-Pruning's methods: its importance, by name


def uniform_ratio(model, example, target: float) -> float:
    """The ratio which, removed from every group, leaves the MACs closest to ``target``.

    Kept counts move in whole channels (a group of 8 keeps 8, 7, 6, ...), so a uniform ratio reaches
    only some MACs fractions: the candidates are the ratios where a count changes; the few whose
    estimate is nearest the target are rewritten and counted, and the nearest count wins.
    """
    with evaluating(model):
        analysis = analyze_graph(traced(model, (example,)))
        macs = MacsModel(analysis, (example,))
        counts_at = uniform_counts_at(analysis, 1)
        candidates = sorted({k / g.size for g in analysis.groups for k in range(g.size)})
        nearest = sorted(candidates, key=lambda r: abs(macs.estimate(counts_at(r)) / macs.total - target))[:4]
    original = count_macs(model, (example,))

    def reached(ratio: float) -> float:
        small = fxprune.compress(model, example, ratio, method="l1", round_to=1)
        return count_macs(small, (example,)) / original

    return min(nearest, key=lambda r: abs(reached(r) - target))


VARIANTS = {  # MLACP's earlier procedure, for comparison: one ranking at the full group, the exact cross-entropy
    "mlacp-oneshot": {"selection": "sensitivity", "classification": "exact"},
    "mlacp-exact": {"classification": "exact"},  # forward selection, the cross-entropy through the suffix
}


def method_object(name: str, args):
    if name.startswith("mlacp"):
        terms = {"mlacp-r": ("reconstruction",), "mlacp-rg": ("reconstruction", "gram"),
                 "mlacp-rc": ("reconstruction", "classification"), "mlacp-rgc": TERMS}.get(name, DEFAULT_TERMS)
        return fxprune.MLACP(terms=terms, steps=args.steps, lr=args.lr, alpha=args.alpha, beta=args.beta,
                             least_squares=not args.no_least_squares, rounds=args.rounds, progress=False,
                             **VARIANTS.get(name, {}))
    return name


def timed(function, *a, **k):
    start = time.perf_counter()
    value = function(*a, **k)
    return value, time.perf_counter() - start


def run_fxprune(name, model, calibration, ratio, test, args, allocation="score") -> dict:
    options = dict(method=method_object(name, args), round_to=1, max_batches=None, recalibrate_bn=True,
                   allocation=allocation)
    small, seconds = timed(fxprune.compress, model, calibration, ratio, **options)
    row = {"raw": accuracy(small, *test), "seconds": seconds, "model": small}
    if not name.startswith("mlacp") and name != "reconstruction":
        refit, refit_seconds = timed(fxprune.compress, model, calibration, ratio, **options, refit=True)
        row.update(refit=accuracy(refit, *test), refit_seconds=refit_seconds)
    elif name == "reconstruction":  # refits already
        row.update(refit=row["raw"], refit_seconds=seconds)
    else:  # MLACP refines its own weights; its refit column is left out to save time
        row.update(refit=None, refit_seconds=None)
    return row


def run_peer(name, model, calibration, ratio, test, args) -> dict:
    """Torch-Pruning: one ratio per layer, each convolution keeping fxprune's count, the classifier kept."""
    example = calibration[0][0][:1]
    small, seconds = timed(torch_pruning_peer.prune, model, example, ratio, importance=PEERS[name], round_to=None,
                           keep=("fc",), fxprune_counts=True, calibration=calibration)
    recalibrate_bn(small, as_batches(calibration))
    return {"raw": accuracy(small, *test), "seconds": seconds, "model": small, "refit": None, "refit_seconds": None}


EQUAL_TIME = "l1+kd"  # l1, then distillation from the baseline for as long as MLACP took on the same images


def run_equal_time(model, calibration, ratio, test, budget: float) -> dict:
    """``l1`` followed by distillation from ``model`` on the calibration images for ``budget`` seconds
    in all (pruning included): the steps are sized from the seconds of a first few."""
    start = time.perf_counter()
    small = fxprune.compress(model, calibration, ratio, method="l1", round_to=1, max_batches=None,
                             recalibrate_bn=True)
    probe_start = time.perf_counter()
    small = fxprune.finetune(small, calibration, teacher=model, max_steps=3, lr=0.01, device="cpu", progress=False)
    per_step = (time.perf_counter() - probe_start) / 3
    steps = max(0, int((budget - (time.perf_counter() - start)) / per_step))
    if steps:
        small = fxprune.finetune(small, calibration, teacher=model, max_steps=steps, lr=0.01, device="cpu",
                                 progress=False)
    return {"raw": accuracy(small, *test), "seconds": time.perf_counter() - start, "model": small, "refit": None,
            "refit_seconds": None}


def equal_time_finetuned(row, mlacp, baseline, calibration, ratio, test, args) -> None:
    """The fine-tuned column of ``l1+kd``: ``l1`` then one distillation for as long as MLACP and its
    fine-tuning took together (one learning-rate schedule, not a second one after the first)."""
    row.pop("model")
    if not args.finetune_steps:
        row.update(finetuned=row["raw"], finetune_seconds=0.0, finetune_steps=0)
        return
    longer = run_equal_time(baseline, calibration, ratio, test, mlacp["seconds"] + mlacp["finetune_seconds"])
    row.update(finetuned=longer["raw"], finetune_seconds=longer["seconds"] - row["seconds"],
               finetune_steps=args.finetune_steps)


def finetuned(row, baseline, calibration, test, args) -> None:
    tuned, seconds = timed(fxprune.finetune, row.pop("model"), calibration, teacher=baseline,
                           max_steps=args.finetune_steps, lr=0.01, device="cpu")
    row.update(finetuned=accuracy(tuned, *test), finetune_seconds=seconds, finetune_steps=args.finetune_steps)


def load_data(args):
    if args.data == "cifar10":
        (x, y), (xt, yt) = cifar10(args.root)
        return x, y, xt[: args.test], yt[: args.test]
    if args.data == "digits":
        (x, y), (xt, yt) = digits(args.test)
        return x, y, xt, yt
    x, y = generate(args.train_size, 0)
    xt, yt = generate(args.test, 1)
    return x, y, xt, yt


def evaluate_model(model_name, data, args, rows: list) -> None:
    x, y, xt, yt = data
    baseline, train_seconds = cached_baseline(model_name, MODELS[model_name], x, y, args.train_steps, args.data)
    base_accuracy = accuracy(baseline, xt, yt)
    print(f"{model_name}: baseline {base_accuracy:.4f} (trained {train_seconds:.0f}s)", flush=True)
    example = x[:1]
    methods = [m for m in args.methods if m not in PEERS or torch_pruning_peer.available()[0]]
    for target in args.targets:
        ratio = uniform_ratio(baseline, example, target)
        for seed in range(args.seeds):
            pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(100 + seed))[: args.calibration]
            calibration = [(x[pick[i:i + 64]], y[pick[i:i + 64]]) for i in range(0, len(pick), 64)]
            for name, allocation in itertools.product(methods, args.allocations):
                if name in ABLATIONS[:-1] and target not in args.ablation_targets:
                    continue
                if name in PEERS and allocation != "score":
                    continue
                torch.manual_seed(seed)
                if name == EQUAL_TIME:  # after "mlacp" in --methods: its seconds at this target and seed
                    mlacp = next(r for r in rows[::-1] if r["method"] == "mlacp" and r["seed"] == seed
                                 and r["target"] == target and r["model"] == model_name)
                    row = run_equal_time(baseline, calibration, ratio, (xt, yt), mlacp["seconds"])
                elif name in PEERS:
                    row = run_peer(name, baseline, calibration, ratio, (xt, yt), args)
                else:
                    row = run_fxprune(name, baseline, calibration, ratio, (xt, yt), args, allocation)
                macs = count_macs(row["model"], (example,)) / count_macs(baseline, (example,))
                if name == EQUAL_TIME:
                    equal_time_finetuned(row, mlacp, baseline, calibration, ratio, (xt, yt), args)
                else:
                    finetuned(row, baseline, calibration, (xt, yt), args)
                row.update(model=model_name, baseline=base_accuracy, target=target, macs=macs, seed=seed, method=name,
                           allocation=allocation)
                rows.append(row)
                print(f"  {label(row):25s} target {target:.2f} seed {seed}: macs {macs:.3f} raw {row['raw']:.4f} "
                      f"refit {row['refit'] if row['refit'] is not None else float('nan'):.4f} "
                      f"ft {row['finetuned']:.4f} ({row['seconds']:.1f}s)", flush=True)


TIMING_RUNS = [(20, 512), (32, 512), (56, 512), (110, 512), (56, 128), (56, 256)]  # depth at 512 images, then size


def seconds_per_kind(model, example, log) -> list[str]:
    """A table of MLACP's seconds per kind of group: by what reads it (one layer, or a residual stream
    read by several), and the size of the maps it is judged on."""
    sites = {site.name: site for site in group_sites(fxprune.analyze(model, example[:1]).analysis)}
    kinds: dict[str, list[float]] = {}
    for record in log:
        site = sites[record.group]
        readers = "one consumer" if len(site.consumers) == 1 else "residual stream (several consumers)"
        side = site.consumers[0].meta["tensor_meta"].shape[-1]
        kinds.setdefault(f"{readers}, {side}×{side} maps", []).append(record.seconds)
    rows = [markdown_header(["group kind", "groups", "seconds (all)", "seconds per group"])]
    for kind, seconds in sorted(kinds.items(), key=lambda item: -sum(item[1])):
        rows.append(markdown_row([kind, len(seconds), f"{sum(seconds):.0f}", f"{np.mean(seconds):.1f}"]))
    return rows


def timing(args) -> None:
    """MLACP seconds on CIFAR-style ResNets (width 16) of growing depth and calibration size (untrained weights)."""
    columns = ["model", "calibration images", "groups", "MLACP seconds (whole compress call)", "seconds per group"]
    lines = [markdown_header(columns)]
    for depth, images in TIMING_RUNS[: args.timing_runs]:
        model = MODELS[f"resnet{depth}"]().eval()
        data = [generate(64, 7 + i)[0] for i in range(images // 64)]
        method = fxprune.MLACP(progress=False, steps=args.steps, lr=args.lr)
        small, seconds = timed(fxprune.compress, model, data, 0.5, method=method, round_to=1, max_batches=None)
        groups = len(small.fxprune_log)
        lines.append(markdown_row([f"ResNet-{depth}", images, groups, f"{seconds:.0f}", f"{seconds / groups:.1f}"]))
        print(lines[-1], flush=True)
    if args.timing_resnet50:  # torchvision's resnet50 at 224×224: 8 batches of 8 random images, random weights
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.resnet50().eval()
        data = [torch.randn(8, 3, 224, 224) for _ in range(8)]
        method = fxprune.MLACP(progress=False, steps=args.steps, lr=args.lr)
        small, seconds = timed(fxprune.compress, model, data, 0.5, method=method, max_batches=None)
        groups = len(small.fxprune_log)
        lines.append(markdown_row(["torchvision resnet50 (224×224)", 64, groups, f"{seconds:.0f}",
                                   f"{seconds / groups:.1f}"]))
        print(lines[-1], flush=True)
        lines += ["", *seconds_per_kind(model, data[0], small.fxprune_log)]
    command = (f"python benchmarks/quality.py --timing --timing-runs {args.timing_runs} --threads {args.threads}"
               + (" --timing-resnet50" if args.timing_resnet50 else ""))
    header = ["# MLACP time vs depth and calibration size", "", f"    {command}", "",
              f"Ratio 0.5, {args.steps} SGD steps per group, batches of 64 images (labels: the baseline's "
              f"predictions), {args.threads} thread(s), CPU; untrained weights (time does not depend on them).", ""]
    write_result("mlacp_time.md", "\n".join(header + lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["synthetic", "digits", "cifar10"], default="synthetic")
    parser.add_argument("--root", help="folder holding CIFAR-10 (torchvision layout)")
    parser.add_argument("--models", nargs="+", default=["resnet20-w8"], choices=sorted(MODELS))
    parser.add_argument("--methods", nargs="+", default=[*CRITERIA, *ABLATIONS, *PEERS],
                        help=f"criteria, MLACP ablations, peers, the MLACP variants {', '.join(VARIANTS)}, or "
                             f"{EQUAL_TIME} (after mlacp: l1 then distillation for MLACP's seconds)")
    parser.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.33])
    parser.add_argument("--allocations", nargs="+", choices=["score", "latency"], default=["score"],
                        help="how fxprune shares the MACs between groups (compress's allocation)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--train-steps", type=int, default=500)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--finetune-steps", type=int, default=30)
    parser.add_argument("--steps", type=int, default=fxprune.MLACP.steps, help="MLACP SGD steps per group")
    parser.add_argument("--ablation-targets", nargs="+", type=float, default=[0.5],
                        help="targets at which the MLACP ablations run (the full method runs at every target)")
    parser.add_argument("--lr", type=float, default=fxprune.MLACP.lr)
    parser.add_argument("--rounds", type=int, default=fxprune.MLACP.rounds, help="MLACP forward-selection rounds")
    parser.add_argument("--alpha", type=float, default=fxprune.MLACP.alpha)
    parser.add_argument("--beta", type=float, default=fxprune.MLACP.beta)
    parser.add_argument("--no-least-squares", action="store_true", help="MLACP: SGD steps from the pruned weights")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--timing-runs", type=int, default=len(TIMING_RUNS))
    parser.add_argument("--timing-resnet50", action="store_true", help="--timing: also torchvision resnet50")
    parser.add_argument("--output", default="quality")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if args.timing:
        return timing(args)
    if args.data == "cifar10" and not args.root:
        parser.error("--data cifar10 needs --root")
    data = load_data(args)
    rows: list = []
    for model_name in args.models:
        evaluate_model(model_name, data, args, rows)
    write_report(rows, args, args.output)
    print(f"wrote {RESULTS / args.output}.md and .png; mean accuracy {np.mean([r['raw'] for r in rows]):.3f}")


if __name__ == "__main__":
    main()
