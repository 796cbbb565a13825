"""The ``fxprune`` command: compress, inspect and time a model from the shell.

    fxprune compress resnet50 --ratio 0.5 --out small.onnx          # MODEL: a torchvision name
    fxprune compress mypkg.nets:build --data imagefolder:val/ --out small.onnx --save small.fxprune
    fxprune inspect mobilenet_v2 --ratio 0.5 --png channels.png     # groups, frozen reasons, widths
    fxprune bench resnet18 --ratios 0.25 0.5 --batches 1 8          # latency original vs pruned
    fxprune                                                         # a demo: resnet18 on generated data

``MODEL`` is a torchvision model name (random weights unless ``--weights``) or ``module:callable``,
a function returning an ``nn.Module``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from tqdm import tqdm

from . import analyze, compress, export_onnx, save
from .deploy import latency
from .errors import FxpruneError, InputError
from .graph.measure import count_macs, count_parameters

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_model(spec: str, weights: str | None = None) -> torch.nn.Module:
    """A torchvision model by name, or the result of calling ``module:callable``."""
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise InputError(f"MODEL: cannot load {spec!r} ({error}); expected module:callable") from error
        model = factory()
    else:
        try:
            model = torchvision.models.get_model(spec, weights=weights)
        except ValueError as error:
            raise InputError(f"MODEL: {spec!r} is not a torchvision model name nor module:callable") from error
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"MODEL: {spec!r} gave a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def load_data(spec: str, size: int, samples: int, batch_size: int, channels: int = 3):
    """Calibration batches: ``synthetic`` (Gaussian noise) or ``imagefolder:PATH`` (labelled images)."""
    if spec == "synthetic":
        generator = torch.Generator().manual_seed(0)
        data = torch.randn(samples, channels, size, size, generator=generator)
        return list(data.split(batch_size))
    kind, _, path = spec.partition(":")
    if kind != "imagefolder" or not path:
        raise InputError(f"--data: expected 'synthetic' or 'imagefolder:PATH', got {spec!r}")
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.Resize(size * 256 // 224), transforms.CenterCrop(size),
                                    transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    dataset = datasets.ImageFolder(path, transform=transform)
    subset = torch.utils.data.Subset(dataset, range(min(samples, len(dataset))))
    return torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="torchvision model name, or module:callable")
    parser.add_argument("--weights", default=None, help="torchvision weights name (default: random weights)")
    parser.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    parser.add_argument("--in-channels", type=int, default=3, help="input channels (default 3)")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of channels removed per group")
    parser.add_argument("--method", default="l1", help="channel criterion: l1, l2, bn_scale, taylor, mlacp, ...")
    parser.add_argument("--round-to", type=int, default=8, help="kept channel counts are multiples of this")
    parser.add_argument("--target-macs", type=float, default=None,
                        help="instead of --ratio: the fraction of the original MACs to keep")
    parser.add_argument("--allocation", default="score", choices=["score", "latency"],
                        help="how channels are shared out between groups: by score (default), or by score "
                             "over modelled latency saved (faster on CPU, uneven plan)")


def _budget(args) -> str:
    """How much is removed, in words: ``ratio 0.5`` or ``target_macs 0.3``, with a non-default allocation."""
    budget = f"ratio {args.ratio}" if args.target_macs is None else f"target_macs {args.target_macs}"
    return budget + (f", {args.allocation} allocation" if args.allocation != "score" else "")


def _compress_options(args, ratio: float | None = None) -> dict:
    """The ``compress`` keyword arguments the command line sets."""
    return {"ratio": args.ratio if ratio is None else ratio, "method": args.method, "round_to": args.round_to,
            "target_macs": args.target_macs, "allocation": args.allocation}


def _example(args) -> torch.Tensor:
    return torch.randn(1, args.in_channels, args.size, args.size, generator=torch.Generator().manual_seed(1))


def _compress_command(args) -> None:
    steps = tqdm(total=4, desc="load model", unit="step")
    model = load_model(args.model, args.weights)
    data = load_data(args.data, args.size, args.samples, args.batch_size, args.in_channels)
    example = (_example(args),)
    steps.update(), steps.set_description(f"compress ({args.method}, {_budget(args)})")
    start = time.perf_counter()
    small = compress(model, data, **_compress_options(args))
    seconds = time.perf_counter() - start
    steps.update(), steps.set_description("measure")
    params, macs = (count_parameters(model), count_parameters(small)), (count_macs(model, example),
                                                                        count_macs(small, example))
    steps.update(), steps.set_description("export" if args.out else "done")
    result = export_onnx(small, example, args.out) if args.out else None
    if args.save:
        save(small, args.save)
    steps.update(), steps.close()
    print(f"compressed {args.model} in {seconds:.1f} s ({args.method}, {_budget(args)}, round_to {args.round_to})")
    print(f"parameters {params[0]:>14,} -> {params[1]:>14,}  ({params[0] / params[1]:.2f}x fewer)")
    print(f"MACs       {macs[0]:>14,} -> {macs[1]:>14,}  ({macs[0] / macs[1]:.2f}x fewer)")
    if result:
        print(f"ONNX: {result}")
    if args.save:
        print(f"plan and weights saved in {args.save} (reload with fxprune.load)")


def layer_widths(model: torch.nn.Module, small: torch.nn.Module) -> list[tuple[str, str, int, int]]:
    """(layer, kind, output channels before, after) for every conv and linear layer of ``model``."""
    rows = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.nn.Parameter) or weight.dim() < 2:
            continue
        try:
            after = small.get_submodule(name).weight.shape[0]
        except AttributeError:
            continue  # a layer the traced graph does not use
        rows.append((name, type(module).__name__, weight.shape[0], after))
    return rows


def plot_widths(rows, title: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(6, len(rows) * 0.12), 4))
    positions = range(len(rows))
    axes.bar(positions, [r[2] for r in rows], color="#c6dbef", label="original")
    axes.bar(positions, [r[3] for r in rows], color="#2171b5", label="pruned")
    axes.set_xlabel("layer (in graph order)")
    axes.set_ylabel("output channels")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _inspect_command(args) -> None:
    model = load_model(args.model, args.weights)
    example = _example(args)
    report = analyze(model, example)
    print(str(report).splitlines()[0])
    shown = report.groups if args.all else report.groups[:args.limit]
    for i, group in enumerate(shown):
        print(f"[{i}] {group}")
    if len(shown) < len(report.groups):
        print(f"... {len(report.groups) - len(shown)} more prunable groups (--all shows them)")
    print(f"\nfrozen groups ({len(report.frozen)}), and why:")
    for group in report.frozen:
        print(f"  {group.channels:5d} channels  {', '.join(group.layers[:3])}: {group.frozen_reason}")
    small = compress(model, example, **_compress_options(args))
    rows = layer_widths(model, small)
    print(f"\nchannels per layer at ratio {args.ratio} (round_to {args.round_to}):")
    for name, kind, before, after in rows:
        print(f"  {name:<40} {kind:<12} {before:>6} -> {after:<6}")
    if args.png:
        plot_widths(rows, f"{args.model}: output channels at ratio {args.ratio}", args.png)
        print(f"plot written to {args.png}")


def _bench_command(args) -> None:
    torch.set_flush_denormal(True)
    model = load_model(args.model, args.weights)
    example = _example(args)
    runtimes, skipped = latency.usable_runtimes(args.runtimes)
    for line in skipped:
        print(line)
    variants = {"original": model}
    budgets = {f"ratio {r}": r for r in args.ratios} if args.target_macs is None else {f"MACs {args.target_macs}": None}
    for name, ratio in tqdm(budgets.items(), desc="compress"):
        variants[name] = compress(model, example, **_compress_options(args, ratio))
    macs = {name: count_macs(m, (example,)) for name, m in variants.items()}
    with tempfile.TemporaryDirectory() as folder:
        paths = {name: Path(folder) / f"{i}.onnx" for i, name in enumerate(variants)}
        if any(r.startswith("ort") for r in runtimes):
            for name in tqdm(variants, desc="export"):
                export_onnx(variants[name], (example,), paths[name])
        cells = [(r, b) for r in runtimes for b in args.batches]
        print(f"threads: {args.threads}; speedup ÷ MACs factor = share of the saving the runtime gets")
        print(f"{'runtime':<11}{'batch':>6}  {'model':<12}{'MACs x':>8}{'ms':>10}{'speedup':>9}{'÷MACs':>7}")
        for runtime, batch in tqdm(cells, desc="time"):
            x = torch.randn(batch, *example.shape[1:])
            runners = {n: latency.runner(runtime, m, paths[n], x, args.threads) for n, m in variants.items()}
            timings = latency.measure_side_by_side(runners, budget_s=args.budget)
            base = timings["original"].median_ms
            for name, timing in timings.items():
                factor, speedup = macs["original"] / macs[name], base / timing.median_ms
                tqdm.write(f"{runtime:<11}{batch:>6}  {name:<12}{factor:>8.2f}{timing.median_ms:>10.2f}"
                           f"{speedup:>9.2f}{speedup / factor:>7.2f}")
            for m in variants.values():
                m.to("cpu")


def _demo_command(args) -> None:
    """What ``python -m fxprune`` shows: compress resnet18 on generated data, print what changed."""
    args.data, args.samples, args.batch_size, args.out, args.save, args.weights = "synthetic", 8, 8, None, None, None
    args.in_channels, args.round_to, args.target_macs, args.allocation = 3, 8, None, "score"
    _compress_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fxprune", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="{compress,inspect,bench,demo}")

    sub = commands.add_parser("compress", help="prune a model and export it to ONNX (with a parity check)")
    _add_model_arguments(sub)
    sub.add_argument("--data", default="synthetic", help="synthetic, or imagefolder:PATH (default synthetic)")
    sub.add_argument("--samples", type=int, default=32, help="calibration images (default 32)")
    sub.add_argument("--batch-size", type=int, default=8)
    sub.add_argument("--out", default=None, help="write the pruned model as ONNX to this file")
    sub.add_argument("--save", default=None, help="also save plan and weights (fxprune.save) to this folder")
    sub.set_defaults(run=_compress_command)

    sub = commands.add_parser("inspect", help="coupled channel groups, frozen reasons, widths per layer")
    _add_model_arguments(sub)
    sub.add_argument("--png", default=None, help="write a plot of channels per layer to this file")
    sub.add_argument("--all", action="store_true", help="print every group (default: the first --limit lines)")
    sub.add_argument("--limit", type=int, default=20)
    sub.set_defaults(run=_inspect_command)

    sub = commands.add_parser("bench", help="latency of the original and pruned models, side by side")
    _add_model_arguments(sub)
    sub.add_argument("--ratios", type=float, nargs="+", default=[0.5])
    sub.add_argument("--batches", type=int, nargs="+", default=[1])
    sub.add_argument("--threads", type=int, default=2, help="CPU threads for ONNX Runtime and PyTorch")
    sub.add_argument("--runtimes", nargs="+", default=["ort-cpu", "torch-cpu", "ort-cuda", "torch-cuda"],
                     choices=latency.RUNTIMES)
    sub.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per runtime and batch")
    sub.set_defaults(run=_bench_command)

    sub = commands.add_parser("demo", help="compress a torchvision model on generated data (the default)")
    sub.add_argument("--model", default="resnet18")
    sub.add_argument("--ratio", type=float, default=0.5)
    sub.add_argument("--method", default="l1")
    sub.add_argument("--size", type=int, default=224)
    sub.set_defaults(run=_demo_command)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``fxprune`` console script and of ``python -m fxprune``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("--") and argv[0] != "--help"):
        argv = ["demo", *argv]  # bare ``python -m fxprune [--model ...]``: the demo, as before
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except FxpruneError as error:
        print(f"fxprune: error: {error}", file=sys.stderr)
        return 1
    return 0
