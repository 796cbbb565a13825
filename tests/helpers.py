"""Shared test tools: random but non-trivial weights, and the oracle check of one compression."""

from __future__ import annotations

import torch

from fxprune.choose.criteria import get_criterion
from fxprune.choose.plan import kept_count, plan_from_scores
from fxprune.pipeline import evaluating, plan_and_rewrite, traced
from fxprune.rewrite import oracle


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights and BatchNorm statistics (see ``oracle.randomize_weights``), in eval mode."""
    return oracle.randomize_weights(model, seed).eval()


def compress_checked(model, inputs: tuple, ratio: float = 0.5, method="random", tolerance: float = 1e-4,
                     ignore=(), expect_removed: bool = True, capture: str = "auto"):
    """Compress with a random choice of channels; assert the result equals the masked original.

    ``expect_removed``: the plan must remove channels (a test passing because nothing was pruned
    proves nothing); only the fuzzer, whose nets may hold nothing removable, turns it off.

    Where a LayerNorm mixes pruned channels the equality does not hold; there the outputs'
    shapes are compared (inside ``oracle.compare``) and the forward must run.
    """
    criterion = get_criterion(method)

    def choose(analysis):
        counts = [kept_count(g.size, ratio, 1) for g in analysis.groups]
        return plan_from_scores(analysis, criterion(analysis, None), counts)

    with evaluating(model):
        gm = traced(model, inputs, capture=capture)
        small, analysis, plan = plan_and_rewrite(gm, inputs, choose, ignore)
    small.graph.lint()
    if expect_removed:
        assert plan.removed_channels > 0, f"nothing removed ({len(analysis.groups)} groups)"
    result = oracle.check(analysis, plan, small, inputs)
    assert result.output_scale > 0, "the model's output is identically zero: the check would be vacuous"
    if result.exact:
        assert result.relative < tolerance, f"pruned differs from masked original by {result.relative:.2e}"
    return small, analysis, plan, result


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
