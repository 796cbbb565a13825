"""The entry points: ``compress`` (trace → analyze → score → rewrite) and ``analyze``."""

from __future__ import annotations

import copy
import hashlib
import re
import warnings

import torch
import torch.fx

from .analysis.analyze import analyze_graph
from .analysis.report import Report
from .choose.plan import Plan
from .choose.selection import Chooser, check_target_macs
from .errors import InputError
from .graph.distributed import active, check_same, failing_together
from .graph.inputs import as_batches, example_inputs, input_specs, model_device, required_inputs
from .graph.language import is_causal_lm, with_next_token_targets
from .graph.modes import dropped_modules, rehost, training_graph
from .pipeline import evaluating, plan_and_rewrite, traced
from .recover.batchnorm import recalibrate_bn as recalibrate_batch_norms
from .rewrite.apply import rewrite
from .rules import fuse_written_out, shape_shortcuts


def _check_arguments(model, ratio, round_to) -> None:
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
        raise InputError(f"ratio: expected a number in [0, 1) (the fraction of channels removed), got {ratio!r}")
    if not isinstance(round_to, int) or round_to < 1:
        raise InputError(f"round_to: expected a positive integer, got {round_to!r}")


def _described(value) -> str:
    """A value as every rank can compare it: a function by its qualified name, no memory addresses."""
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _model_digest(model) -> str:
    """The model's parameter names, shapes and sums, hashed: ranks must prune the same model (weights
    initialised at random without a common seed differ from rank to rank)."""
    if not isinstance(model, torch.nn.Module):
        return type(model).__name__
    with torch.no_grad():
        shapes = [(name, tuple(p.shape), float(p.double().sum())) for name, p in model.named_parameters()]
    return f"{type(model).__name__} {hashlib.sha256(repr(shapes).encode()).hexdigest()[:16]}"


def _check_same_on_every_rank(model, **arguments) -> None:
    """Under ``torch.distributed``: the same arguments and model on every rank, else an ``InputError`` on all.

    Runs before any other check, so that an argument wrong on one rank only is reported on every
    rank instead of leaving the others waiting in a later collective. Without a process group: nothing.
    """
    if not active():
        return
    check_same("model", _model_digest(model))
    for name, value in arguments.items():
        check_same(name, _described(value))


def _module_names(ignore) -> tuple[str, ...]:
    """``ignore`` as a tuple of module names: one string is one name."""
    if isinstance(ignore, str):
        return (ignore,)
    try:
        names = tuple(ignore)
    except TypeError:
        raise InputError(f"ignore: expected a module name or a list of them (like ['fc']), "
                         f"got {type(ignore).__name__}") from None
    for name in names:
        if not isinstance(name, str):
            raise InputError(f"ignore: expected module names as model.named_modules() gives them (like 'fc'), "
                             f"got a {type(name).__name__}")
    return names


def _prune(model, inputs, leaf_modules, choose_plan, ignore=(), copy_weights=False, concrete_args=None, given=None,
           capture="auto"):
    """Trace (in training mode too when the graph depends on it), plan and rewrite; the pruned model and plan.

    ``copy_weights``: work on a copy of the traced weights (for methods that change kept weights),
    so the user's model stays as it was. ``given``: the first batch, which ``inputs`` are the first rows of.
    """
    gm = traced(model, inputs, leaf_modules, concrete_args, given, capture)
    exported = gm.meta.get("fxprune_capture") == "export"  # one capture, in eval mode
    train_gm = None if exported else training_graph(model, gm, inputs, leaf_modules, shape_shortcuts())  # aux heads
    if train_gm is not None:
        fuse_written_out(train_gm)
    gm = train_gm or gm
    gm = copy.deepcopy(gm) if copy_weights else gm
    small, _, plan = plan_and_rewrite(gm, inputs, choose_plan, ignore)
    if train_gm is not None:
        small = _in_both_modes(model, small, gm, inputs, leaf_modules, choose_plan, ignore, concrete_args)
    return small, plan


def _in_both_modes(model, small, gm, inputs, leaf_modules, choose, ignore, concrete_args=None) -> torch.nn.Module:
    """For a graph traced in training mode: the user's class with the pruned layers (see ``modes``)."""
    host = rehost(model, small, gm, inputs)
    if host is not None:
        return host
    eval_gm = traced(model, inputs, leaf_modules, concrete_args)
    private = copy.deepcopy(eval_gm)  # methods that refine weights change the graph's own
    fallback, _, _ = plan_and_rewrite(private, inputs, choose, ignore)
    fallback.fxprune_dropped = dropped_modules(model, eval_gm)
    warnings.warn(f"{type(model).__name__}: modules used only in training mode were dropped: "
                  f"{', '.join(fallback.fxprune_dropped)}; the result computes the eval-mode graph in both modes",
                  stacklevel=3)
    return fallback


def compress(model: torch.nn.Module, data, ratio: float = 0.5, *, method="auto", ignore=(), round_to: int = 8,
             leaf_modules=(), max_batches: int | None = 8, target_macs: float | None = None,
             refit: bool | None = None, recalibrate_bn: bool = False,
             allocation: str = "score", concrete_args: dict | None = None,
             capture: str = "auto") -> torch.fx.GraphModule:
    """Return a physically smaller copy of ``model`` with ``ratio`` of every prunable group's channels removed.

    >>> small = compress(torchvision.models.resnet18(), torch.randn(2, 3, 64, 64), ratio=0.5)  # doctest: +SKIP

    ``data``: a tensor of inputs, an ``(inputs, targets)`` pair, or an iterable of either.
    ``ignore``: names of modules whose parameters must keep their shape. The plan is kept as
    ``small.fxprune_plan``; the user's model is left as it was. ``concrete_args``: values of forward's
    arguments fixed while tracing, for Python control flow on them (``{"flag": True}``); the result
    takes them as defaults. ``capture``: ``"auto"`` (torch.fx, then ``torch.export`` for models FX
    cannot trace), ``"fx"`` or ``"export"``.
    ``round_to``: kept channel counts are multiples of it (8 by default: CPU and GPU kernels run
    markedly faster on such widths; a group smaller than it is not rounded); 1 disables rounding.
    ``method``: ``"auto"`` (default: ``mlacp`` when ``data`` holds at least 64 samples, else ``l1``;
    ``plan.info["method"]`` says which), a criterion name (``l1``, ``reconstruction``, ...), a
    layer-wise method (``mlacp`` and its ablations, or an ``MLACP(...)``), or a callable criterion.
    ``target_macs``: instead of ``ratio``, the fraction of the original MACs to keep (within 2%).
    ``refit``: least-squares refit of the layers that lost inputs (default: when the method asks for
    it). ``recalibrate_bn``:
    re-estimate BatchNorm statistics on ``data`` when channels were removed (off by default so that
    the pruned model equals the original with the removed channels zeroed; turn it on when the
    pruned model is used without fine-tuning). ``allocation``: how a MACs budget is shared between
    groups — ``"score"`` (default: one ratio everywhere for ``ratio``, a global ranking of normalised
    scores for ``target_macs``) or ``"latency"``: the same MACs (``target_macs``, or what ``ratio``
    reaches uniformly) with channels ranked by score over modelled time saved (``fxprune.cost``), so
    memory-bound parts (depthwise, squeeze-excite, activations) shrink more; faster on CPU, but the
    plan is uneven (no group under 16 channels) and may cost more accuracy. The score plan is kept
    when the latency plan promises under 10% less time; ``plan.info["allocation"]`` says which.
    Under ``torch.distributed`` each rank passes its own shard as ``data`` and the same other
    arguments (checked first: a mismatch is an ``InputError`` on every rank); the data-driven sums
    are reduced over the ranks, so every rank returns the same plan (``fxprune.graph.distributed``).
    """
    _check_same_on_every_rank(model, ratio=ratio, method=method, target_macs=target_macs, round_to=round_to,
                              allocation=allocation, ignore=ignore, refit=refit, recalibrate_bn=recalibrate_bn)
    _check_arguments(model, ratio, round_to)
    check_target_macs(target_macs)
    ignore = _module_names(ignore)
    batches = failing_together(lambda: as_batches(data, max_batches, model_device(model), required_inputs(model)))
    if is_causal_lm(model):  # text without labels: its next tokens are what the model predicts
        batches = [with_next_token_targets(batch) for batch in batches]
    inputs = example_inputs(batches)
    choose = Chooser(method, batches, inputs, ratio, target_macs, round_to, refit, allocation, rewrite=rewrite)

    with evaluating(model):
        small, plan = _prune(model, inputs, leaf_modules, choose, ignore, copy_weights=choose.changes_weights,
                             concrete_args=concrete_args, given=batches[0].inputs, capture=capture)
        check_same("method", plan.to_json(), "the ranks chose different plans (a criterion must sum what it "
                   "measures over the ranks: fxprune.graph.distributed.all_reduce_sum)")
        if recalibrate_bn and plan.removed_channels:
            recalibrate_batch_norms(small, batches)
    small.fxprune_plan = plan
    small.fxprune_input_specs = input_specs(inputs)
    if choose.pruner is not None:
        small.fxprune_log = list(choose.pruner.log)
    small.train(model.training)
    return small


def analyze(model: torch.nn.Module, example, *, ignore=(), leaf_modules=(), concrete_args=None,
            capture: str = "auto") -> Report:
    """The coupled channel groups of ``model``: what can be pruned, and why the rest cannot."""
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    batches = as_batches(example, 1, required=required_inputs(model))
    inputs = example_inputs(batches)
    with evaluating(model):
        gm = traced(model, inputs, leaf_modules, concrete_args, batches[0].inputs, capture)
        return Report(analyze_graph(gm, _module_names(ignore)))


def apply_plan(model: torch.nn.Module, example, plan: Plan, *, leaf_modules=(),
               concrete_args=None, capture: str = "auto") -> torch.fx.GraphModule:
    """Re-apply a saved plan to a fresh instance of the model it was made for (traced as ``compress`` traced it)."""
    inputs = example_inputs(as_batches(example, 1, required=required_inputs(model)))
    with evaluating(model):
        small, _ = _prune(model, inputs, leaf_modules, lambda analysis: plan, concrete_args=concrete_args,
                          capture=capture)
    small.fxprune_plan = plan
    small.fxprune_input_specs = input_specs(inputs)
    small.train(model.training)
    return small
