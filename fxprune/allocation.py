"""How many channels each group keeps so that the pruned model has a given fraction of the MACs.

The MACs of every node are measured once (torch's FLOP counter, node by node); a node's MACs shrink
with the fraction of channels kept in each group it touches (a conv between groups A and B costs
``f_A · f_B`` of its original MACs, a depthwise conv inside one group ``f_A``). That estimate picks
the keep counts; the counts are then checked on a really rewritten model and the estimate's target
corrected until the true MACs are within 1% (so ``target_macs`` is met within 2%).

* ``global_keep_counts``: channels of all groups ranked together by their score divided by the mean
  score of their group (scores of different layers are not on one scale), lowest removed first;
  a group keeps at least ``MIN_KEEP_FRACTION`` of its channels so no layer collapses; without
  rounding, a last step moves single channels between groups to meet the budget closely.
* ``uniform_keep_counts``: one ratio for every group, found by bisection (for layer-wise methods,
  which cannot score all groups before pruning any).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx
from torch.utils.flop_counter import FlopCounterMode

from .analysis import Analysis
from .errors import InputError
from .measure import count_macs
from .mlacp.geometry import param_readers
from .plan import kept_count, plan_from_scores
from .rewrite import rewrite
from .slots import output_key
from .tracing import tensor_shapes

MIN_KEEP_FRACTION = 0.1
TOLERANCE = 0.01


class _NodeMacs(torch.fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm)
        self.macs: dict[torch.fx.Node, int] = {}

    def run_node(self, node):
        counter = FlopCounterMode(display=False)
        with counter:
            value = super().run_node(node)
        self.macs[node] = counter.get_total_flops() // 2
        return value


class MacsModel:
    """Estimated MACs of ``analysis.gm`` for any keep counts (one per group)."""

    def __init__(self, analysis: Analysis, inputs: tuple):
        gm = analysis.gm
        counter = _NodeMacs(gm)
        with torch.no_grad():
            counter.run(*inputs)
        self.sizes = np.array([g.size for g in analysis.groups])
        groups_of_key: dict[str, set[int]] = {}
        for i, group in enumerate(analysis.groups):
            for member in group.members:
                groups_of_key.setdefault(member.ref.key, set()).add(i)
        params_of_node: dict[torch.fx.Node, list[str]] = {}
        for key, nodes in param_readers(gm).items():
            for node in nodes:
                params_of_node.setdefault(node, []).append(key)
        self.terms: list[tuple[int, list[int]]] = []
        for node, macs in counter.macs.items():
            if macs:
                keys = [output_key(a, p) for a in node.all_input_nodes for p in tensor_shapes(a)]
                keys += [output_key(node, p) for p in tensor_shapes(node)] + params_of_node.get(node, [])
                touched = sorted({g for key in keys for g in groups_of_key.get(key, ())})
                self.terms.append((macs, touched))
        self.total = sum(macs for macs, _ in self.terms)

    def estimate(self, counts) -> float:
        fractions = np.asarray(counts, dtype=np.float64) / np.maximum(self.sizes, 1)
        return sum(macs * float(np.prod(fractions[groups])) for macs, groups in self.terms)


def _bisect(counts_at, estimate, goal: float, low: float, high: float, nudge: bool):
    """The counts whose estimated MACs come closest to ``goal`` (counts fall as the level rises)."""
    for _ in range(60):
        middle = (low + high) / 2
        if estimate(counts_at(middle)) > goal:
            low = middle
        else:
            high = middle
    closest = min(counts_at(low), counts_at(high), key=lambda counts: abs(estimate(counts) - goal))
    if not nudge:
        return closest
    return _nudge(closest, counts_at(float("inf")), counts_at(-float("inf")), estimate, goal)


def _nudge(counts, floors, sizes, estimate, goal, rounds: int = 64) -> list[int]:
    """Move single groups by one channel while that brings the estimate closer to ``goal``.

    A global threshold moves in steps of one channel of whichever group comes next; in a small or
    residual-heavy model one channel can be several percent of the MACs. This last step trades a
    channel of one group for a cheaper one of another so that the budget is met closely.
    """
    counts = list(counts)
    for _ in range(rounds):
        distance = abs(estimate(counts) - goal)
        options = [counts[:i] + [c + step] + counts[i + 1:] for i, c in enumerate(counts) for step in (-1, 1)
                   if floors[i] <= c + step <= sizes[i]]
        best = min(options, key=lambda option: abs(estimate(option) - goal), default=None)
        if best is None or abs(estimate(best) - goal) >= distance:
            break
        counts = best
    return counts


def uniform_counts_at(analysis: Analysis, round_to: int):
    return lambda ratio: [kept_count(g.size, ratio, round_to) for g in analysis.groups]


def global_counts_at(analysis: Analysis, scores: list[np.ndarray], round_to: int):
    normalized = [np.sort(np.asarray(s, np.float64) / max(float(np.mean(s)), 1e-30)) for s in scores]

    def counts(threshold: float) -> list[int]:
        result = []
        for group, values in zip(analysis.groups, normalized):
            floor = max(1, int(np.ceil(MIN_KEEP_FRACTION * group.size)))
            keep = max(floor, group.size - int(np.searchsorted(values, threshold)))
            result.append(kept_count(group.size, 1 - keep / group.size, round_to))
        return result

    return counts


def fit_counts(analysis: Analysis, inputs: tuple, target: float, counts_at, level_range,
               nudge: bool = False) -> list[int]:
    """Keep counts whose rewritten model has ``target`` of the original MACs (within ``TOLERANCE``)."""
    model = MacsModel(analysis, inputs)
    original = count_macs(analysis.gm, inputs)
    best = count_macs(_trial(analysis, counts_at(level_range[1]), inputs), inputs) / original
    if target < best - 2 * TOLERANCE:
        raise InputError(f"target_macs={target:g} cannot be reached: the smallest this model can get "
                         f"(every prunable group at its minimum) is {best:.3f} of its MACs; frozen groups are "
                         "listed by fxprune.analyze(model, example)")
    goal, tried = target * model.total, []
    for _ in range(5):
        counts = _bisect(counts_at, model.estimate, goal, *level_range, nudge)
        reached = count_macs(_trial(analysis, counts, inputs), inputs) / original
        tried.append((abs(reached - target), counts))
        if abs(reached - target) <= TOLERANCE * target or reached <= 0:
            break
        goal *= target / reached
    return min(tried, key=lambda t: t[0])[1]


def _trial(analysis: Analysis, counts: list[int], inputs: tuple) -> torch.fx.GraphModule:
    """The model rewritten with some channels removed in the given numbers (MACs depend on counts only)."""
    plan = plan_from_scores(analysis, [np.zeros(g.size) for g in analysis.groups], counts)
    return rewrite(analysis, plan, inputs)


def uniform_keep_counts(analysis: Analysis, inputs: tuple, target: float, round_to: int = 1) -> list[int]:
    return fit_counts(analysis, inputs, target, uniform_counts_at(analysis, round_to), (0.0, 0.999))


def global_keep_counts(analysis, inputs, target, scores, round_to: int = 1) -> list[int]:
    levels = np.concatenate([np.asarray(s, np.float64) / max(float(np.mean(s)), 1e-30) for s in scores] or [[0.0]])
    return fit_counts(analysis, inputs, target, global_counts_at(analysis, scores, round_to),
                      (0.0, float(levels.max()) + 1.0), nudge=round_to == 1)
