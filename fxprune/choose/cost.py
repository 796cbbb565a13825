"""A latency model: how the run time of a pruned model depends on the channels each group keeps.

MACs alone say that a pruned MobileNet should run as much faster as it has fewer MACs; it does not,
because much of its time goes to ops that move memory rather than multiply (depthwise convolutions,
activations, squeeze-excite pooling and gating, norms, adds, concatenations), and their cost falls
only linearly with width while a dense convolution's falls with the product of its two widths.
So the model charges every node two terms, in MAC-equivalents:

    cost(node) = MACs(node) · Π f_g   +   ELEMENT_COST · Σ elements(t) · kept(t)
                 (groups g it touches)     (tensors t it reads and writes)

where ``f_g`` is the fraction of group ``g``'s channels kept and ``kept(t)`` is the fraction of the
elements of tensor ``t`` that remain (per dimension, the slots of removed channels go). A 1×1
convolution between groups A and B costs ``f_A·f_B`` of its MACs; a depthwise convolution, a SiLU or
an SE multiply inside group A costs ``f_A`` of its traffic.

``latency_keep_counts`` uses it to allocate a MACs budget: channels are ranked globally by their
normalised score divided by their group's ``time_per_mac`` (modelled time saved per MAC saved), so at
the same MACs the groups whose time falls only linearly — wide expansions around depthwise
convolutions and SE blocks — lose more channels, and the modelled time falls further than under the
score-only ranking. The price is a more uneven plan (groups go down to ``LATENCY_MIN_CHANNELS``):
more risk to accuracy for the same MACs, so the score plan is kept when the gain is small
(``MIN_MODELLED_GAIN``).

>>> model = LatencyModel(analysis, inputs)                       # doctest: +SKIP
>>> model.estimate([g.size // 2 for g in analysis.groups]) / model.total   # doctest: +SKIP
0.31

What deployment runtimes fold away costs nothing: views and reshapes, dropout, a BatchNorm or a
ReLU-like activation that directly follows a convolution or linear layer, and a residual add of such
an output (ONNX Runtime folds the norm into the weights and fuses the activation and the add into
the convolution kernel). ``ELEMENT_COST`` — one tensor
element read or written, in MACs — was fitted on ONNX Runtime CPU (one thread, batch 8) to the
latencies of mobilenet_v2, efficientnet_b0, regnet_y_800mf, convnext_tiny, densenet121 and resnet18,
original and uniformly pruned at ratios 0.25 and 0.5 (``benchmarks/latency_calibration.py``; 10.0,
models taken one by one gave 4 to 25; two threads gave 10.9 at batch 8, 11.2 at 32 and 30.5 at 1); it
is a property of the machine and runtime, so treat it as a default, not a constant of nature: set
``fxprune.cost.ELEMENT_COST`` to a refitted value and later latency plans use it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx

from ..analysis.analyze import Analysis
from ..errors import InputError
from ..graph.shapes import tensor_shapes
from ..graph.tensors import output_key
from ..rules import rule_for
from .allocation import MacsModel, TrialRewrite, global_keep_counts, kept_share, shrink_factors, slots_per_dim

ELEMENT_COST = 10.0
MIN_MODELLED_GAIN = 0.1  # the least modelled time saved for which the latency plan is taken
# Narrower layers ran below the rate this model assumes (on ONNX Runtime CPU, DenseNet's 32-channel
# layers cut to 8 made its latency plan slower than uniform) and cost accuracy fast; the latency plan
# cuts no group below this many channels.
LATENCY_MIN_CHANNELS = 16

_CALLS = ("call_module", "call_function", "call_method")


def _latency_class(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str | None:
    """The op's ``latency`` fact (on its rule; see ``rules.base``); graph inputs, outputs and constants are free."""
    if node.op not in _CALLS:
        return "free"
    rule = rule_for(node, gm)
    return rule.latency if rule is not None else None


def _from_producer(gm, source, fused: set) -> bool:
    """Whether ``source`` is a conv/linear output (or a fused op on one) read by one node only."""
    if not isinstance(source, torch.fx.Node) or len(source.users) != 1:
        return False
    return source in fused or (source.op in ("call_module", "call_function")
                               and _latency_class(gm, source) == "producer")


def _fused(gm, node, fused: set) -> bool:
    """A norm or ReLU-like op on a conv/linear output, or a residual add of one (the runtime fuses both)."""
    if _latency_class(gm, node) != "fusable":
        return False
    return any(_from_producer(gm, a, fused) for a in node.args[:2])


class LatencyModel:
    """Modelled time of ``analysis.gm`` (in MAC-equivalents) for any keep counts, one per group."""

    def __init__(self, analysis: Analysis, inputs: tuple, macs: MacsModel | None = None,
                 element_cost: float | None = None):
        self.macs = macs or MacsModel(analysis, inputs)
        self.sizes = self.macs.sizes
        self.element_cost = ELEMENT_COST if element_cost is None else element_cost  # read now: refits apply
        slots = slots_per_dim(analysis)
        shapes = {output_key(n, p): s for n in analysis.gm.graph.nodes for p, s in tensor_shapes(n).items()}
        self.memory_terms = [(count * int(np.prod(shapes[key])), shrink_factors(shapes[key], slots.get(key, {})))
                             for key, count in self._traffic(analysis.gm).items()]  # (elements, shrink factors)
        self.total = self.estimate_fractions(np.ones((1, len(self.sizes))))[0]

    @staticmethod
    def _traffic(gm) -> dict[str, int]:
        """How many times each activation tensor is read or written by a node that costs time."""
        traffic: dict[str, int] = {}
        fused: set = set()
        for node in gm.graph.nodes:
            if _latency_class(gm, node) == "free":
                continue
            if _fused(gm, node, fused):
                fused.add(node)
                continue
            touched = [output_key(a, p) for a in node.all_input_nodes for p in tensor_shapes(a)]
            touched += [output_key(node, p) for p in tensor_shapes(node)]
            for key in touched:
                traffic[key] = traffic.get(key, 0) + 1
        return traffic

    def estimate_fractions(self, fractions: np.ndarray) -> np.ndarray:
        """Modelled time for each row of ``fractions`` (rows × groups: kept fraction of each group)."""
        fractions = np.atleast_2d(fractions)
        traffic = sum((elements * kept_share(fractions, factors) for elements, factors in self.memory_terms),
                      np.zeros(len(fractions)))
        return self.macs.estimate_fractions(fractions) + self.element_cost * traffic

    def estimate(self, counts) -> float:
        return float(self.estimate_fractions(np.asarray(counts, np.float64) / np.maximum(self.sizes, 1))[0])

    def time_per_mac(self, fractions: np.ndarray, step: float = 0.01) -> np.ndarray:
        """For each group: modelled time saved per MAC saved by removing a little of it at ``fractions``.

        Normalised by the whole model's time per MAC, so 1 means "like the average of the model";
        above 1, removing this group's channels buys more time than its MACs suggest.
        """
        base = np.asarray(fractions, np.float64)
        trials = np.vstack([base, base - step * np.eye(len(base))])
        time, macs = self.estimate_fractions(trials), self.macs.estimate_fractions(trials)
        saved_time, saved_macs = time[0] - time[1:], macs[0] - macs[1:]
        average = time[0] / max(macs[0], 1e-30)
        return np.clip(saved_time / np.maximum(saved_macs, 1e-12 * macs[0]) / average, 1e-3, 1e3)


def _uniform_fraction(model: LatencyModel, target: float) -> float:
    """The one kept fraction for every group whose modelled MACs are ``target`` of the original's."""
    low, high = 0.0, 1.0
    full = model.macs.estimate_fractions(np.ones((1, len(model.sizes))))[0]
    for _ in range(40):
        middle = (low + high) / 2
        if model.macs.estimate_fractions(np.full((1, len(model.sizes)), middle))[0] > target * full:
            high = middle
        else:
            low = middle
    return high


def latency_keep_counts(analysis: Analysis, inputs: tuple, target: float, scores: list[np.ndarray],
                        round_to: int, rewrite: TrialRewrite, element_cost: float | None = None,
                        fallback: list[int] | None = None) -> list[int]:
    """Keep counts at ``target`` of the MACs that cut the modelled latency more than a score-only ranking.

    Each group's weight is its ``time_per_mac``, taken where every group keeps the same fraction
    that meets the budget; then the global ranking of ``allocation.global_keep_counts``, with no
    group cut below ``LATENCY_MIN_CHANNELS``.

    With ``fallback`` (the score allocation's counts for the same budget), the latency counts are
    returned only when they reach the budget and model at least ``MIN_MODELLED_GAIN`` less time.
    Their plan is uneven and costs accuracy, and where the model promises a few percent (plain conv
    nets: resnet, vgg, regnet) none was measured.
    """
    macs = MacsModel(analysis, inputs)
    model = LatencyModel(analysis, inputs, macs, element_cost)
    weights = model.time_per_mac(np.full(len(model.sizes), _uniform_fraction(model, target)))
    try:
        counts = global_keep_counts(analysis, inputs, target, scores, round_to, rewrite, weights, macs,
                                    LATENCY_MIN_CHANNELS)
    except InputError:  # the budget needs layers narrower than LATENCY_MIN_CHANNELS
        if fallback is None:
            raise
        return list(fallback)
    if fallback is not None and model.estimate(counts) > (1 - MIN_MODELLED_GAIN) * model.estimate(fallback):
        return list(fallback)
    return counts
