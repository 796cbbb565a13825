"""How many channels each group keeps so that the pruned model has a given fraction of the MACs.

The MACs of every node are measured once (torch's FLOP counter, node by node); a node's MACs shrink
with the fraction of channels kept in each group it touches (a conv between groups A and B costs
``f_A · f_B`` of its original MACs, a depthwise conv inside one group ``f_A``). For a layer with a
weight, each weight dim shrinks by the slots its groups lose there, so a conv reading a concat of
groups A and B costs ``(n_A·f_A + n_B·f_B) / (n_A + n_B)`` of its input side, not ``f_A · f_B``. That estimate picks
the keep counts; the counts are then checked on a really rewritten model and the estimate's target
corrected until the true MACs are within 1% (so ``target_macs`` is met within 2%). The rewrite is
the caller's (``rewrite``: ``rewrite.apply.rewrite`` in ``compress``): this stage only chooses.

* ``global_keep_counts``: channels of all groups ranked together by their score divided by the mean
  score of their group (scores of different layers are not on one scale), lowest removed first;
  a group keeps at least ``MIN_KEEP_FRACTION`` of its channels so no layer collapses; without
  rounding, a last step moves single channels between groups to meet the budget closely.
* ``uniform_keep_counts``: one ratio for every group, found by bisection (for layer-wise methods,
  which cannot score all groups before pruning any).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.fx
from torch.utils.flop_counter import FlopCounterMode

from ..analysis.analyze import Analysis
from ..analysis.sites import param_readers
from ..errors import InputError
from ..graph.measure import count_macs
from ..graph.shapes import tensor_shapes
from ..graph.tensors import output_key
from .plan import Plan, kept_count, plan_from_scores

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


def slots_per_dim(analysis: Analysis) -> dict[str, dict[int, dict[int, int]]]:
    """For each tensor key (activations and parameters): dim → {group: slots of that group in the dim}."""
    found: dict[str, dict[int, dict[int, int]]] = {}
    for gid, group in enumerate(analysis.groups):
        for member in group.members:
            per_group = found.setdefault(member.ref.key, {}).setdefault(member.ref.dim, {})
            per_group[gid] = per_group.get(gid, 0) + member.index.size
    return found


def shrink_factors(shape, slots: dict[int, dict[int, int]]) -> list[tuple]:
    """(dim size, groups, slots of each group) for every dim of a tensor that some group lies in."""
    return [(shape[dim], np.array(list(groups)), np.array(list(groups.values()), np.float64))
            for dim, groups in slots.items()]


def kept_share(fractions: np.ndarray, factors) -> np.ndarray:
    """For each row of ``fractions`` (rows × groups): the share of a tensor left, a product over its dims."""
    kept = np.ones(len(fractions))
    for size, groups, slots in factors:
        kept *= 1 - ((1 - fractions[:, groups]) @ slots) / size
    return kept


def _own_factors(groups: list[int], sizes) -> list[tuple]:
    """Factors that make a product of the groups' kept fractions (one factor per group)."""
    return [(float(sizes[g]), np.array([g]), np.array([float(sizes[g])])) for g in groups]


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
        slots, shapes = slots_per_dim(analysis), analysis.table.shapes
        self.terms: list[tuple[int, list[tuple]]] = []  # (MACs, shrink factors)
        for node, macs in counter.macs.items():
            if macs:
                weights = [k for k in params_of_node.get(node, []) if k.endswith("weight") and len(shapes[k]) > 1]
                if weights:
                    self.terms.append((macs, shrink_factors(shapes[weights[0]], slots.get(weights[0], {}))))
                    continue
                keys = [output_key(a, p) for a in node.all_input_nodes for p in tensor_shapes(a)]
                keys += [output_key(node, p) for p in tensor_shapes(node)] + params_of_node.get(node, [])
                touched = sorted({g for key in keys for g in groups_of_key.get(key, ())})
                self.terms.append((macs, _own_factors(touched, self.sizes)))
        self.total = sum(macs for macs, _ in self.terms)

    def estimate_fractions(self, fractions: np.ndarray) -> np.ndarray:
        """Estimated MACs for each row of ``fractions`` (rows × groups: kept fraction of each group)."""
        fractions = np.atleast_2d(fractions)
        return sum((macs * kept_share(fractions, factors) for macs, factors in self.terms), np.zeros(len(fractions)))

    def estimate(self, counts) -> float:
        return float(self.estimate_fractions(np.asarray(counts, np.float64) / np.maximum(self.sizes, 1))[0])


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


def normalized_scores(scores: list[np.ndarray], weights=None) -> list[np.ndarray]:
    """Each group's sorted scores over their mean, divided by the group's weight (1 when not given)."""
    weights = np.ones(len(scores)) if weights is None else weights
    return [np.sort(np.asarray(s, np.float64) / max(float(np.mean(s)), 1e-30) / w) for s, w in zip(scores, weights)]


def global_counts_at(analysis: Analysis, scores: list[np.ndarray], round_to: int, weights=None,
                     min_channels: int = 1):
    """Keep counts at a threshold on normalised scores; a group of weight w loses channels w times sooner.

    A group keeps at least ``MIN_KEEP_FRACTION`` of its channels and at least ``min_channels`` (all
    of them when it has fewer).
    """
    normalized = normalized_scores(scores, weights)

    def counts(threshold: float) -> list[int]:
        result = []
        for group, values in zip(analysis.groups, normalized):
            floor = min(group.size, max(min_channels, int(np.ceil(MIN_KEEP_FRACTION * group.size))))
            keep = max(floor, group.size - int(np.searchsorted(values, threshold)))
            result.append(kept_count(group.size, 1 - keep / group.size, round_to))
        return result

    return counts


TrialRewrite = Callable[[Analysis, Plan, tuple], torch.nn.Module]


def fit_counts(analysis: Analysis, inputs: tuple, target: float, counts_at, level_range, rewrite: TrialRewrite,
               nudge: bool = False, model: MacsModel | None = None) -> list[int]:
    """Keep counts whose rewritten model has ``target`` of the original MACs (within ``TOLERANCE``)."""
    model = model or MacsModel(analysis, inputs)
    original = count_macs(analysis.gm, inputs)
    best = count_macs(_trial(analysis, counts_at(level_range[1]), inputs, rewrite), inputs) / original
    if target < best - 2 * TOLERANCE:
        raise InputError(f"target_macs={target:g} cannot be reached: the smallest this model can get "
                         f"(every prunable group at its minimum) is {best:.3f} of its MACs; frozen groups are "
                         "listed by fxprune.analyze(model, example)")
    goal, tried = target * model.total, []
    for _ in range(5):
        counts = _bisect(counts_at, model.estimate, goal, *level_range, nudge)
        reached = count_macs(_trial(analysis, counts, inputs, rewrite), inputs) / original
        tried.append((abs(reached - target), counts))
        if abs(reached - target) <= TOLERANCE * target or reached <= 0:
            break
        goal *= target / reached
    return min(tried, key=lambda t: t[0])[1]


def _trial(analysis: Analysis, counts: list[int], inputs: tuple, rewrite: TrialRewrite) -> torch.nn.Module:
    """The model rewritten with some channels removed in the given numbers (MACs depend on counts only)."""
    plan = plan_from_scores(analysis, [np.zeros(g.size) for g in analysis.groups], counts)
    return rewrite(analysis, plan, inputs)


def uniform_macs_fraction(analysis: Analysis, inputs: tuple, ratio: float, round_to: int,
                          rewrite: TrialRewrite) -> float:
    """The fraction of the MACs left when ``ratio`` of every group's channels is removed."""
    counts = uniform_counts_at(analysis, round_to)(ratio)
    return count_macs(_trial(analysis, counts, inputs, rewrite), inputs) / count_macs(analysis.gm, inputs)


def uniform_keep_counts(analysis: Analysis, inputs: tuple, target: float, round_to: int,
                        rewrite: TrialRewrite) -> list[int]:
    return fit_counts(analysis, inputs, target, uniform_counts_at(analysis, round_to), (0.0, 0.999), rewrite)


def global_keep_counts(analysis, inputs, target, scores, round_to: int, rewrite: TrialRewrite, weights=None,
                       model: MacsModel | None = None, min_channels: int = 1) -> list[int]:
    """Counts at ``target`` MACs from one ranking of all channels (``weights``, ``min_channels``: see
    ``global_counts_at``)."""
    levels = np.concatenate(normalized_scores(scores, weights) or [[0.0]])
    counts_at = global_counts_at(analysis, scores, round_to, weights, min_channels)
    return fit_counts(analysis, inputs, target, counts_at, (0.0, float(levels.max()) + 1.0), rewrite,
                      nudge=round_to == 1, model=model)
