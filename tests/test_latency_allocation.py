"""The latency model (``fxprune.cost``) and ``allocation="latency"``: same MACs, less modelled time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import randomize

import fxprune
from fxprune.choose.allocation import MIN_KEEP_FRACTION
from fxprune.choose.cost import LATENCY_MIN_CHANNELS, LatencyModel
from fxprune.choose.selection import Chooser
from fxprune.errors import InputError
from fxprune.graph.inputs import as_batches
from fxprune.graph.measure import count_macs
from fxprune.pipeline import evaluating, plan_and_rewrite, rewrite, traced
from fxprune.rewrite import oracle

pytestmark = pytest.mark.usefixtures("one_thread")


class Inverted(torch.nn.Module):
    """A MobileNet-like block between dense convolutions: expansion, depthwise, squeeze-excite, projection."""

    def __init__(self):
        super().__init__()
        self.stem, self.stem_bn = torch.nn.Conv2d(3, 37, 3, padding=1), torch.nn.BatchNorm2d(37)
        self.expand, self.expand_bn = torch.nn.Conv2d(37, 131, 1), torch.nn.BatchNorm2d(131)
        self.depthwise = torch.nn.Conv2d(131, 131, 3, padding=1, groups=131)
        self.depthwise_bn = torch.nn.BatchNorm2d(131)
        self.squeeze, self.excite = torch.nn.Conv2d(131, 29, 1), torch.nn.Conv2d(29, 131, 1)
        self.project, self.project_bn = torch.nn.Conv2d(131, 37, 1), torch.nn.BatchNorm2d(37)
        self.dense = torch.nn.Conv2d(37, 41, 3, padding=1)
        self.fc = torch.nn.Linear(41, 11)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        y = F.relu6(self.expand_bn(self.expand(x)))
        y = F.silu(self.depthwise_bn(self.depthwise(y)))
        y = y * torch.sigmoid(self.excite(F.relu(self.squeeze(y.mean((2, 3), keepdim=True)))))
        x = x + self.project_bn(self.project(y))
        return self.fc(F.relu(self.dense(x)).mean((2, 3)))


def example(n=4, size=16):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def choose_and_rewrite(model, x, **options):
    """compress's steps with the chooser in view: (pruned model, analysis, plan)."""
    chooser = Chooser("l1", as_batches(x, 1), (x,), round_to=1, rewrite=rewrite, **options)
    with evaluating(model):
        return plan_and_rewrite(traced(model, (x,)), (x,), chooser)


@pytest.mark.parametrize("target", [0.5, 0.3])
def test_latency_plan_meets_the_macs_and_models_less_time_than_the_score_plan(target):
    model, x = randomize(Inverted()), example()
    plans = {allocation: choose_and_rewrite(model, x, target_macs=target, allocation=allocation)
             for allocation in ("score", "latency")}
    costs = LatencyModel(plans["score"][1], (x,))
    original = count_macs(model, (x,))
    for small, _, _ in plans.values():
        assert abs(count_macs(small, (x,)) / original - target) <= 0.02 * target
    time = {name: costs.estimate([len(g.keep) for g in plan.groups]) for name, (_, _, plan) in plans.items()}
    assert time["latency"] < 0.95 * time["score"]
    assert plans["latency"][2].info["allocation"] == "latency"


def test_latency_plan_rewrites_to_the_masked_original():
    model, x = randomize(Inverted()), example()
    small, analysis, plan = choose_and_rewrite(model, x, target_macs=0.4, allocation="latency")
    small.graph.lint()
    result = oracle.check(analysis, plan, small, (x,))
    assert result.exact and result.output_scale > 0 and result.relative < 1e-4
    assert plan.info["allocation"] == "latency"
    for group, entry in zip(analysis.groups, plan.groups):
        assert len(entry.keep) >= int(np.ceil(MIN_KEEP_FRACTION * group.size))
        assert len(entry.keep) >= min(group.size, LATENCY_MIN_CHANNELS)


def test_latency_allocation_keeps_the_score_plan_when_only_narrow_layers_meet_the_budget():
    """At 0.08 of the MACs the latency plan would need layers under LATENCY_MIN_CHANNELS: no error."""
    model, x = randomize(Inverted()), example()
    small, analysis, plan = choose_and_rewrite(model, x, target_macs=0.08, allocation="latency")
    assert "score plan kept" in plan.info["allocation"]
    assert abs(count_macs(small, (x,)) / count_macs(model, (x,)) - 0.08) <= 0.02 * 0.08


def test_expansion_around_a_depthwise_conv_costs_more_time_per_mac_than_a_dense_group():
    model, x = randomize(Inverted()), example()
    with evaluating(model):
        _, analysis, _ = choose_and_rewrite(model, x, ratio=0.0)
    costs = LatencyModel(analysis, (x,))
    rates = costs.time_per_mac(np.full(len(analysis.groups), 0.6))
    size_of = [g.size for g in analysis.groups]
    expansion, dense = size_of.index(131), size_of.index(41)
    assert rates[expansion] > 1.5 * rates[dense]
    # a depthwise-only cost falls linearly: half the expansion's channels, about half its traffic
    full = costs.estimate(size_of)
    half = costs.estimate([s // 2 if s == 131 else s for s in size_of])
    assert 0 < full - half < full


def test_a_refitted_element_cost_set_on_the_module_is_used(monkeypatch):
    """The calibration benchmark tells users to set ``fxprune.cost.ELEMENT_COST``: it must take effect."""
    model, x = randomize(Inverted()), example()
    with evaluating(model):
        _, analysis, _ = choose_and_rewrite(model, x, ratio=0.0)
    keep_all = [g.size for g in analysis.groups]
    default = LatencyModel(analysis, (x,)).estimate(keep_all)
    monkeypatch.setattr(fxprune.cost, "ELEMENT_COST", 2 * fxprune.cost.ELEMENT_COST)
    refitted = LatencyModel(analysis, (x,))
    assert refitted.element_cost == fxprune.cost.ELEMENT_COST
    assert refitted.estimate(keep_all) > default


def test_ratio_with_latency_allocation_keeps_the_macs_of_the_uniform_ratio():
    model, x = randomize(Inverted()), example()
    uniform = fxprune.compress(model, x, ratio=0.5, round_to=1)
    latency = fxprune.compress(model, x, ratio=0.5, round_to=1, allocation="latency")
    macs = count_macs(uniform, (x,))
    assert abs(count_macs(latency, (x,)) - macs) <= 0.02 * macs
    assert [len(g.keep) for g in latency.fxprune_plan.groups] != [len(g.keep) for g in uniform.fxprune_plan.groups]


def test_layerwise_method_shares_a_latency_budget_as_l1_does():
    """MLACP cannot score channels before it prunes; its counts must not come from all-equal scores."""
    model, x = randomize(Inverted()), example()
    l1 = fxprune.compress(model, x, ratio=0.5, round_to=1, allocation="latency")
    mlacp = fxprune.compress(model, x, ratio=0.5, round_to=1, allocation="latency", method="mlacp")
    assert [len(g.keep) for g in mlacp.fxprune_plan.groups] == [len(g.keep) for g in l1.fxprune_plan.groups]


class PlainConvs(torch.nn.Module):
    """Dense 3×3 convolutions only: time follows MACs, so the latency plan has little to gain."""

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.Sequential(
            torch.nn.Conv2d(3, 31, 3, padding=1), torch.nn.BatchNorm2d(31), torch.nn.ReLU(),
            torch.nn.Conv2d(31, 37, 3, padding=1), torch.nn.BatchNorm2d(37), torch.nn.ReLU(),
            torch.nn.Conv2d(37, 41, 3, padding=1), torch.nn.BatchNorm2d(41), torch.nn.ReLU())
        self.fc = torch.nn.Linear(41, 11)

    def forward(self, x):
        return self.fc(self.convs(x).mean((2, 3)))


def test_latency_allocation_keeps_the_score_plan_when_the_modelled_gain_is_small():
    model, x = randomize(PlainConvs()), example()
    uniform = fxprune.compress(model, x, ratio=0.5, round_to=1)
    latency = fxprune.compress(model, x, ratio=0.5, round_to=1, allocation="latency")
    assert [len(g.keep) for g in latency.fxprune_plan.groups] == [len(g.keep) for g in uniform.fxprune_plan.groups]
    assert "score plan kept" in latency.fxprune_plan.info["allocation"]
    inverted = fxprune.compress(randomize(Inverted()), x, ratio=0.5, round_to=1, allocation="latency")
    assert inverted.fxprune_plan.info["allocation"] == "latency"


def test_unknown_allocation_names_the_argument_and_the_choices():
    with pytest.raises(InputError, match="allocation: expected one of 'score', 'latency', got 'fast'"):
        fxprune.compress(Inverted(), example(), target_macs=0.5, allocation="fast")


def test_ops_the_runtime_fuses_into_a_convolution_cost_no_traffic():
    model, x = randomize(Inverted()), example()
    with evaluating(model):
        gm = traced(model, (x,))
    charged = LatencyModel._traffic(gm)
    assert "stem_bn" not in charged and "expand_bn" not in charged  # BatchNorm folded, ReLU fused
    assert charged["add"] == 1  # the residual add is fused into the projection: only the next conv reads it
    assert charged["silu"] == 3 and charged["mul"] == 2  # written, then read by the SE pool and gate / the projection
