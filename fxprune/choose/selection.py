"""Choosing the plan: how many channels each group keeps, which ones, and what happens to the weights.

``Chooser`` is the ``choose_plan`` step that ``compress`` hands to ``plan_and_rewrite``:

1. counts: ``ratio`` of every group (uniform), or the counts that meet ``target_macs`` (global
   ranking of the criterion's scores; a uniform ratio for layer-wise methods, which cannot score a
   group before the groups before it are pruned); with ``allocation="latency"``, the counts that
   meet the MACs budget (``target_macs``, or the MACs the uniform ``ratio`` reaches) with the least
   modelled latency (``fxprune.cost``; layer-wise methods share it by the L1 magnitudes of the channels,
   as the ``l1`` method would: with no scores at all, whole groups would fall to the minimum in turn),
   unless the model promises less than ``MIN_MODELLED_GAIN`` over the score allocation's counts;
2. which channels: a criterion's top scores, or a layer-wise method (MLACP) that also refines the
   kept weights of ``analysis.gm`` in place;
3. optionally the least-squares refit of the layers that lost inputs (``fxprune.refit``).

Methods that change weights work on a private copy of the traced model (``changes_weights``); the
chooser restores that copy's weights whenever the plan is chosen again after a failed rewrite.
"""

from __future__ import annotations

import numpy as np
import torch

from ..analysis.analyze import Analysis
from ..errors import InputError
from ..graph.distributed import all_reduce_sum
from .allocation import TrialRewrite, global_keep_counts, uniform_keep_counts, uniform_macs_fraction
from .cost import latency_keep_counts
from .criteria import CRITERIA, get_criterion
from .mlacp import LAYERWISE
from .plan import Plan, kept_count, plan_from_scores
from .refit import refit as refit_layers

AUTO = "auto"  # compress's default method: ``automatic_method``
MLACP_FROM_SAMPLES = 64
METHOD_NAMES = sorted([AUTO, *CRITERIA, *LAYERWISE])  # every method that can be asked for by name


def automatic_method(batches) -> str:
    """``method="auto"``: ``"mlacp"`` when the data holds at least ``MLACP_FROM_SAMPLES`` samples (over
    every rank), else ``"l1"``.

    MLACP judges every group on the data and refits its consumers by least squares: 64 images give a
    3×3 convolution reading 256 channels on 7×7 maps 3136 rows for its 2304 unknowns, and on the
    quality benchmark (256 images) it keeps more accuracy than every criterion (README). A handful of
    examples, as a tensor passed to show the input's shape, cannot judge a layer: ``l1`` reads only
    the weights. Labels do not enter the rule: MLACP labels data without them by the model's own
    predictions, and its default losses compare feature maps.
    """
    samples = all_reduce_sum(torch.tensor(float(sum(batch.size for batch in batches))))
    return "mlacp" if float(samples) >= MLACP_FROM_SAMPLES else "l1"


def resolve_method(method):
    """(criterion, None) for a scoring method, (None, pruner) for a layer-wise one like MLACP."""
    if isinstance(method, str) and method in LAYERWISE:
        return None, LAYERWISE[method]()
    if getattr(method, "refines_weights", False) and hasattr(method, "prune"):
        return None, method
    if isinstance(method, str) and method not in CRITERIA:
        raise InputError(f"method: unknown method {method!r}; choose one of {', '.join(METHOD_NAMES)}, "
                         "or pass a callable(analysis, batches) -> list of score arrays")
    return get_criterion(method), None


class Chooser:
    """Builds the plan for one analysis; see the module docstring."""

    def __init__(self, method, batches, inputs, ratio=0.5, target_macs=None, round_to=1, refit=None,
                 allocation="score", *, rewrite: TrialRewrite):
        check_allocation(allocation)
        self.allocation = allocation
        method = automatic_method(batches) if isinstance(method, str) and method == AUTO else method
        self.criterion, self.pruner = resolve_method(method)
        self.method_name = method if isinstance(method, str) else getattr(method, "__name__", type(method).__name__)
        self.batches, self.inputs = batches, inputs
        self.rewrite = rewrite  # trial rewrites check that a MACs budget is met
        self.ratio, self.target_macs, self.round_to = ratio, target_macs, round_to
        self.refit = refit if refit is not None else getattr(self.criterion, "refit_after", False)
        self._saved_for, self._saved_state = None, None
        self.latency_plan_taken: bool | None = None  # set when allocation="latency" shares a budget

    @property
    def changes_weights(self) -> bool:
        return self.pruner is not None or bool(self.refit)

    def __call__(self, analysis: Analysis) -> Plan:
        self._restore(analysis)
        target = self._target(analysis)
        if target is not None and target >= 1:
            counts = [g.size for g in analysis.groups]
        elif target is None:
            counts = [kept_count(g.size, self.ratio, self.round_to) for g in analysis.groups]
        else:
            counts = None
        scores = None
        if self.criterion is not None and counts != [g.size for g in analysis.groups]:
            scores = self.criterion(analysis, self.batches)
            counts = counts if counts is not None else self._budget_counts(analysis, target, scores)
        if self.pruner is not None:
            counts = counts if counts is not None else self._budget_counts(analysis, target, None)
            if counts != [g.size for g in analysis.groups]:
                scores = self.pruner.prune(analysis, self.batches, counts)
        if scores is None:
            scores = [np.zeros(g.size) for g in analysis.groups]
        plan = plan_from_scores(analysis, scores, counts, self._info())
        if self.refit and plan.removed_channels:
            refit_layers(analysis, plan, self.batches)
        return plan

    def _budget_counts(self, analysis: Analysis, target: float, scores: list[np.ndarray] | None) -> list[int]:
        """Counts that meet the MACs ``target``: by score (uniform for a layer-wise method without
        scores, or for a ``ratio``), or under ``allocation="latency"`` the latency plan when it
        promises enough (``fxprune.cost.latency_keep_counts``)."""
        if self.target_macs is None:
            by_score = [kept_count(g.size, self.ratio, self.round_to) for g in analysis.groups]
        elif scores is None:
            by_score = uniform_keep_counts(analysis, self.inputs, target, self.round_to, self.rewrite)
        else:
            by_score = global_keep_counts(analysis, self.inputs, target, scores, self.round_to, self.rewrite)
        if self.allocation != "latency":
            return by_score
        ranking = scores if scores is not None else get_criterion("l1")(analysis, None)  # L1 for a layer-wise method
        counts = latency_keep_counts(analysis, self.inputs, target, ranking, self.round_to, self.rewrite,
                                     fallback=by_score)
        self.latency_plan_taken = counts != by_score
        return counts

    def _target(self, analysis: Analysis) -> float | None:
        """The MACs fraction to meet; None for one ratio in every group."""
        if self.allocation == "latency" and self.target_macs is None and self.ratio > 0:
            return uniform_macs_fraction(analysis, self.inputs, self.ratio, self.round_to, self.rewrite)
        return self.target_macs

    def _info(self) -> dict:
        info = {"method": str(self.method_name), "refit": bool(self.refit)}
        info.update({"ratio": self.ratio} if self.target_macs is None else {"target_macs": self.target_macs})
        if self.allocation == "score":
            return info
        taken = self.latency_plan_taken is not False
        kept = "latency (score plan kept: the latency plan saved too little or missed the budget)"
        return info | {"allocation": "latency" if taken else kept}

    def _restore(self, analysis: Analysis) -> None:
        """Weights as traced, even when an earlier round refined them and its rewrite failed."""
        if not self.changes_weights:
            return
        if self._saved_for is not analysis.gm:  # a new graph (compress's eval-mode fallback, say)
            self._saved_for = analysis.gm
            self._saved_state = {k: v.clone() for k, v in analysis.gm.state_dict().items()}
        else:
            analysis.gm.load_state_dict(self._saved_state)


def check_target_macs(target_macs) -> None:
    if target_macs is not None and (not isinstance(target_macs, (int, float)) or not 0 < target_macs <= 1):
        raise InputError("target_macs: expected a fraction in (0, 1] of the original MACs to keep, "
                         f"got {target_macs!r}")


ALLOCATIONS = ("score", "latency")


def check_allocation(allocation) -> None:
    if allocation not in ALLOCATIONS:
        raise InputError(f"allocation: expected one of {', '.join(map(repr, ALLOCATIONS))}, got {allocation!r}")
