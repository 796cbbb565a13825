"""The ``fxprune`` command: compress, inspect and time a model from the shell.

    fxprune compress resnet50 --ratio 0.5 --out small.onnx          # MODEL: a torchvision name
    fxprune compress mypkg.nets:build --data imagefolder:val/ --out small.onnx --save small.fxprune
    fxprune inspect mobilenet_v2 --ratio 0.5 --png channels.png     # groups, frozen reasons, widths
    fxprune bench resnet18 --ratios 0.25 0.5 --batches 1 8          # latency original vs pruned
    fxprune                                                         # a demo: resnet18 on generated data

``MODEL`` is a torchvision model name (random weights unless ``--weights``) or ``module:callable``,
a function returning an ``nn.Module``. Results go to stdout, progress (one line per stage) to
stderr; a wrong argument is one ``fxprune: error: ...`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch
import tqdm.auto
import tqdm.std

from . import analyze, cli_data, compress, export_onnx, finetune, save
from .choose.selection import AUTO, METHOD_NAMES, MLACP_FROM_SAMPLES
from .cli_data import UsageError, load_data, load_model
from .cli_widths import layer_widths, plot_widths, print_groups, width_figure
from .deploy import latency
from .errors import FxpruneError
from .graph.distributed import is_main
from .graph.inputs import as_batches
from .graph.measure import count_macs, count_parameters
from .graph.outputs import logits_of
from .recover.finetune import distillation_loss

__all__ = ["build_parser", "layer_widths", "load_data", "load_model", "main", "plot_widths", "width_figure"]

METHOD_HELP = f"channel criterion or layer-wise method (auto: mlacp from {MLACP_FROM_SAMPLES} samples, else l1)"
FINETUNE_DEFAULTS = dict(finetune.__kwdefaults__)  # its temperature and kd_weight, for the loss the CLI prints


def say(message: str) -> None:
    """One line of progress on stderr (above any active progress bar); under torchrun, rank 0's only."""
    if is_main():
        tqdm.std.tqdm.write(message, file=sys.stderr)


def _join_torchrun() -> bool:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1), join its process group, so the ranks share the scoring
    (each takes its share of the calibration data); True when this call started the group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return False
    torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


# ---- arguments ------------------------------------------------------------------------------------------------------

def _add_model_arguments(parser: argparse.ArgumentParser, several_ratios: bool = False) -> None:
    parser.add_argument("model", metavar="MODEL", help="torchvision model name, or module:callable")
    parser.add_argument("--weights", help="torchvision weights name, e.g. DEFAULT (default: random weights)")
    parser.add_argument("--size", type=cli_data.positive_int, default=224, help="input height and width")
    parser.add_argument("--in-channels", type=cli_data.positive_int, default=3, help="input channels")
    budget = parser.add_mutually_exclusive_group()
    if several_ratios:
        budget.add_argument("--ratios", "--ratio", dest="ratios", type=cli_data.ratio_type, nargs="+", default=[0.5],
                            help="fractions of channels removed per group, one pruned model each")
    else:
        budget.add_argument("--ratio", type=cli_data.ratio_type, default=0.5,
                            help="fraction of channels removed per group")
    budget.add_argument("--target-macs", type=cli_data.macs_type,
                        help="instead of --ratio: the fraction of the original MACs to keep (default: none)")
    parser.add_argument("--method", default=AUTO, choices=METHOD_NAMES, help=METHOD_HELP)
    parser.add_argument("--round-to", type=cli_data.positive_int, default=8,
                        help="kept channel counts are multiples of this")
    parser.add_argument("--allocation", default="score", choices=["score", "latency"],
                        help="how channels are shared out between groups: by score, or by score over modelled "
                             "latency saved (faster on CPU, uneven plan)")
    parser.add_argument("--ignore", nargs="+", default=[], metavar="NAME",
                        help="modules whose parameters keep their shape")


def _add_compress_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="synthetic", help="synthetic, or imagefolder:PATH (one folder per class)")
    parser.add_argument("--samples", type=cli_data.positive_int, default=32, help="calibration images")
    parser.add_argument("--batch-size", type=cli_data.positive_int, default=8, help="calibration images per batch")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights, synthetic data, image sample")
    parser.add_argument("--max-batches", type=cli_data.max_batches_type, default=8,
                        help="batches of --data compress uses; 0 or all: every one")
    parser.add_argument("--refit", action=argparse.BooleanOptionalAction, default=None,
                        help="least-squares refit of the layers that lost inputs (default: when the method asks)")
    parser.add_argument("--recalibrate-bn", action="store_true",
                        help="re-estimate BatchNorm statistics on --data after pruning")
    parser.add_argument("--finetune-epochs", type=cli_data.count_type, default=0,
                        help="epochs of fine-tuning on all of --data, distilled from the original (0: none)")
    parser.add_argument("--finetune-lr", type=cli_data.positive_float, default=0.01, help="fine-tuning learning rate")
    parser.add_argument("--out", help="write the pruned model as ONNX to this file (default: no export)")
    parser.add_argument("--save", help="also save plan and weights (fxprune.save) to this folder (default: none)")


def _budget(args) -> str:
    """How much is removed, in words: ``ratio 0.5`` or ``target_macs 0.3``, with a non-default allocation."""
    budget = f"ratio {args.ratio}" if args.target_macs is None else f"target_macs {args.target_macs}"
    return budget + (f", {args.allocation} allocation" if args.allocation != "score" else "")


def _compress_options(args, ratio: float | None = None) -> dict:
    """The ``compress`` keyword arguments every command sets."""
    return {"ratio": args.ratio if ratio is None else ratio, "method": args.method, "round_to": args.round_to,
            "target_macs": args.target_macs, "allocation": args.allocation, "ignore": tuple(args.ignore)}


def _example(args) -> torch.Tensor:
    return torch.randn(1, args.in_channels, args.size, args.size, generator=torch.Generator().manual_seed(1))


# ---- compress -------------------------------------------------------------------------------------------------------

def _batches_used(data, max_batches: int | None) -> str:
    total = len(data)
    used = total if max_batches is None else min(total, max_batches)
    return f"{used} of {total} batches (--max-batches {'all' if max_batches is None else max_batches})"


def _compress_command(args) -> None:
    started = _join_torchrun()
    try:
        _compress(args)
    finally:
        if started:
            torch.distributed.destroy_process_group()


def _compress(args) -> None:
    say(f"loading {args.model}" + (f" with weights {args.weights}" if args.weights else " (random weights)") + "…")
    model = load_model(args.model, args.weights)
    data, described = load_data(args.data, args.size, args.samples, args.batch_size, args.in_channels, args.seed)
    say(described)
    say(f"tracing, then scoring with {args.method} ({_budget(args)}) on {_batches_used(data, args.max_batches)}…")
    start = time.perf_counter()
    small = compress(model, data, **_compress_options(args), max_batches=args.max_batches, refit=args.refit,
                     recalibrate_bn=args.recalibrate_bn)
    seconds = time.perf_counter() - start
    say(f"pruned in {seconds:.1f} s" + (", BatchNorm statistics recalibrated" if args.recalibrate_bn else ""))
    method = _method_used(small)
    if args.finetune_epochs:
        small = _finetune(small, model, data, args)
    _report(args, model, small, seconds, method)


def _distillation_loss(student, teacher, batches) -> float:
    """The loss ``finetune`` minimises, averaged over ``batches`` (both models in eval mode)."""
    defaults = FINETUNE_DEFAULTS
    total = 0.0
    with torch.no_grad():
        for batch in batches:
            total += float(distillation_loss(logits_of(student(*batch.args, **batch.kwargs)),
                                             logits_of(teacher(*batch.args, **batch.kwargs)),
                                             batch.targets, defaults["temperature"], defaults["kd_weight"]))
    return total / len(batches)


def _finetune(small, model, data, args):
    epochs = args.finetune_epochs
    batches = as_batches(data)
    before = _distillation_loss(small, model, batches)
    say(f"fine-tuning: {epochs} epoch{'s' * (epochs > 1)} of {len(batches)} batches, lr {args.finetune_lr}, "
        f"distilled from the original (loss {before:.3f})…")
    start = time.perf_counter()
    tuned = finetune(small, data, teacher=model, epochs=epochs, lr=args.finetune_lr)
    after = _distillation_loss(tuned, model, batches)
    say(f"fine-tuning: epoch {epochs}/{epochs}, loss {after:.3f} (was {before:.3f}), "
        f"{time.perf_counter() - start:.1f} s")
    return tuned


def _method_used(small) -> str:
    """The method the plan was made with: what ``--method auto`` chose."""
    return small.fxprune_plan.info["method"]


def _report(args, model, small, seconds: float, method: str) -> None:
    """Sizes, the ONNX file and the saved plan: written once, by rank 0 under torchrun."""
    if not is_main():
        return
    example = (_example(args),)
    say("measuring parameters and MACs…")
    params = count_parameters(model), count_parameters(small)
    macs = count_macs(model, example), count_macs(small, example)
    if args.out:
        say(f"exporting {args.out} and checking ONNX Runtime against PyTorch…")
    result = export_onnx(small, example, args.out) if args.out else None
    if args.save:
        say(f"saving {args.save}…")
        save(small, args.save)
    print(f"compressed {args.model} in {seconds:.1f} s ({method}, {_budget(args)}, round_to {args.round_to})")
    print(f"parameters {params[0]:>14,} -> {params[1]:>14,}  ({params[0] / params[1]:.2f}x fewer)")
    print(f"MACs       {macs[0]:>14,} -> {macs[1]:>14,}  ({macs[0] / macs[1]:.2f}x fewer)")
    if result:
        print(f"ONNX: {result}")
    if args.save:
        print(f"plan and weights saved in {args.save} (reload with fxprune.load)")


def _inspect_command(args) -> None:
    model = load_model(args.model, args.weights)
    example = _example(args)
    say(f"tracing {args.model} and analysing its channels…")
    print_groups(analyze(model, example, ignore=tuple(args.ignore)), None if args.all else args.limit)
    say(f"pruning with {args.method} ({_budget(args)}) to show the widths…")
    small = compress(model, example, **_compress_options(args))
    rows = layer_widths(model, small)
    asked = f"{_method_used(small)}, {_budget(args)}"
    print(f"\nchannels per layer at {asked} (round_to {args.round_to}):")
    for name, kind, before, after in rows:
        print(f"  {name:<40} {kind:<12} {before:>6} -> {after:<6}")
    if args.png:
        plot_widths(rows, f"{args.model}: output channels at {asked}", args.png)
        print(f"plot written to {args.png}")


# ---- bench ----------------------------------------------------------------------------------------------------------

def _bench_variants(args, model, example) -> dict:
    if args.target_macs is None:
        budgets = {f"ratio {r}": r for r in args.ratios}
    else:
        budgets = {f"MACs {args.target_macs}": 0.5}
    say(f"pruning with {args.method}, round_to {args.round_to}, {args.allocation} allocation…")
    variants = {"original": model}
    for name, ratio in tqdm.std.tqdm(budgets.items(), desc="compress", file=sys.stderr, leave=False):
        variants[name] = compress(model, example, **_compress_options(args, ratio))
    return variants


def _bench_command(args) -> None:
    torch.set_flush_denormal(True)
    model = load_model(args.model, args.weights)
    example = _example(args)
    runtimes, skipped = latency.usable_runtimes(args.runtimes)
    for line in skipped:
        print(line)
    variants = _bench_variants(args, model, example)
    macs = {name: count_macs(m, (example,)) for name, m in variants.items()}
    with tempfile.TemporaryDirectory() as folder:
        paths = {name: Path(folder) / f"{i}.onnx" for i, name in enumerate(variants)}
        if any(r.startswith("ort") for r in runtimes):
            for name in tqdm.std.tqdm(variants, desc="export", file=sys.stderr, leave=False):
                export_onnx(variants[name], (example,), paths[name])
        print(f"threads: {args.threads}; speedup ÷ MACs factor = share of the saving the runtime gets")
        print(f"{'runtime':<11}{'batch':>6}  {'model':<12}{'MACs x':>8}{'ms':>10}{'speedup':>9}{'÷MACs':>7}")
        cells = [(r, b) for r in runtimes for b in args.batches]
        for runtime, batch in tqdm.std.tqdm(cells, desc="time", file=sys.stderr, leave=False):
            _time_cell(args, runtime, batch, variants, paths, macs, example)


def _time_cell(args, runtime: str, batch: int, variants: dict, paths: dict, macs: dict, example) -> None:
    x = torch.randn(batch, *example.shape[1:])
    runners = {n: latency.runner(runtime, m, paths[n], x, args.threads) for n, m in variants.items()}
    timings = latency.measure_side_by_side(runners, budget_s=args.budget)
    base = timings["original"].median_ms
    for name, timing in timings.items():
        factor, speedup = macs["original"] / macs[name], base / timing.median_ms
        tqdm.std.tqdm.write(f"{runtime:<11}{batch:>6}  {name:<12}{factor:>8.2f}{timing.median_ms:>10.2f}"
                            f"{speedup:>9.2f}{speedup / factor:>7.2f}")
    for m in variants.values():
        m.to("cpu")


# ---- the parser and main --------------------------------------------------------------------------------------------

def _demo_command(args) -> None:
    """What ``python -m fxprune`` shows: compress a torchvision model on generated data, print what changed."""
    argv = ["compress", args.model, "--ratio", str(args.ratio), "--method", args.method, "--size", str(args.size),
            "--samples", "8", "--batch-size", "8"]
    _compress_command(build_parser().parse_args(argv))


def _subcommand(commands, name: str, help: str, run) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=help, description=help, formatter_class=cli_data.HelpFormatter)
    sub.set_defaults(run=run)
    return sub


def build_parser() -> argparse.ArgumentParser:
    parser = cli_data.Parser(prog="fxprune", description=__doc__.splitlines()[0],
                             formatter_class=cli_data.HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="{compress,inspect,bench,demo}")

    sub = _subcommand(commands, "compress", "prune a model and export it to ONNX (with a parity check)",
                      _compress_command)
    _add_model_arguments(sub)
    _add_compress_arguments(sub)

    sub = _subcommand(commands, "inspect", "coupled channel groups, frozen reasons, widths per layer",
                      _inspect_command)
    _add_model_arguments(sub)
    sub.add_argument("--png", help="write a plot of channels per layer to this file (default: no plot)")
    sub.add_argument("--all", action="store_true", help="print every group, not the first --limit")
    sub.add_argument("--limit", type=cli_data.count_type, default=20, help="prunable groups printed")

    sub = _subcommand(commands, "bench", "latency of the original and pruned models, side by side", _bench_command)
    _add_model_arguments(sub, several_ratios=True)
    sub.add_argument("--batches", type=cli_data.positive_int, nargs="+", default=[1], help="batch sizes timed")
    sub.add_argument("--threads", type=cli_data.positive_int, default=2,
                     help="CPU threads for ONNX Runtime and PyTorch")
    sub.add_argument("--runtimes", nargs="+", default=["ort-cpu", "torch-cpu", "ort-cuda", "torch-cuda"],
                     choices=latency.RUNTIMES, help="runtimes timed (unavailable ones are skipped)")
    sub.add_argument("--budget", type=cli_data.positive_float, default=2.0,
                     help="seconds of timed runs per runtime and batch")

    sub = _subcommand(commands, "demo", "compress a torchvision model on generated data (the default)",
                      _demo_command)
    sub.add_argument("--model", default="resnet18", help="torchvision model name")
    sub.add_argument("--ratio", type=cli_data.ratio_type, default=0.5, help="fraction of channels removed per group")
    sub.add_argument("--method", default=AUTO, choices=METHOD_NAMES, help=METHOD_HELP)
    sub.add_argument("--size", type=cli_data.positive_int, default=224, help="input height and width")
    return parser


def _version() -> str:
    try:
        return metadata.version("fxprune")
    except metadata.PackageNotFoundError:
        return "(version unknown: not installed)"


def _check_arguments(args) -> None:
    """What argparse cannot check alone, before any work."""
    if args.command != "demo":
        cli_data.check_model_spec(args.model, args.weights)
    if args.command == "compress":
        cli_data.check_data_spec(args.data)


def close_progress_bars() -> None:
    """Clear every active tqdm bar, so that what is printed next starts its own line and no bar comes back."""
    bars = {bar for cls in (tqdm.std.tqdm, tqdm.auto.tqdm) for bar in list(getattr(cls, "_instances", ()))}
    for bar in sorted(bars, key=lambda bar: -abs(getattr(bar, "pos", 0))):  # the lowest line last: it ends at column 0
        bar.leave = False
        bar.close()
    if bars:
        sys.stderr.write("\r")


def _fail(error: Exception, code: int) -> int:
    close_progress_bars()
    print(f"fxprune: error: {error}", file=sys.stderr, flush=True)
    return code


def main(argv=None) -> int:
    """Entry point of the ``fxprune`` console script and of ``python -m fxprune``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["demo", *argv]  # bare ``python -m fxprune [--model ...]``: the demo, as before
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise UsageError("expected a command: compress, inspect, bench or demo (see fxprune --help)")
        _check_arguments(args)
        torch.manual_seed(getattr(args, "seed", 0))  # random weights: the same model in every run and on every rank
        args.run(args)
    except UsageError as error:
        return _fail(error, 2)
    except FxpruneError as error:
        return _fail(error, 1)
    return 0
