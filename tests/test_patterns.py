"""One small model per coupling pattern: pruned == masked original, and something was pruned."""

import pytest
import torch
from helpers import compress_checked, parameter_count, randomize
from models import PATTERNS, MeanOverChannels, UnknownOp

import fxprune


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_pruned_equals_masked_original(name):
    model = randomize(PATTERNS[name]())
    inputs = (torch.randn(2, 3, 8, 8),)
    small, analysis, plan, _ = compress_checked(model, inputs, ratio=0.5)
    assert plan.removed_channels > 0
    assert parameter_count(small) < parameter_count(model)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_with_l1_and_rounding(name):
    model = randomize(PATTERNS[name](), seed=1)
    inputs = (torch.randn(2, 3, 8, 8),)
    small = fxprune.compress(model, inputs[0], ratio=0.3, method="l1", round_to=2)
    assert small(*inputs).shape == model(*inputs).shape


def _frozen_reasons(model, layer):
    report = fxprune.analyze(model, torch.randn(1, 3, 8, 8))
    return report.why_frozen(layer), report


def test_mean_over_channels_freezes_them_with_reason():
    reasons, report = _frozen_reasons(randomize(MeanOverChannels()), "c1")
    assert reasons and any("mean" in r for r in reasons)
    assert not any(g.layers and g.layers[0].startswith("c1") for g in report.groups)


def test_unknown_op_freezes_what_it_touches_and_names_it():
    reasons, report = _frozen_reasons(randomize(UnknownOp()), "c1")
    assert any("roll" in r for r in reasons)
    # the channels between c2 and c3 never meet roll and stay prunable
    assert any(name.startswith("c2") for g in report.groups for name in g.layers)


def test_grouped_conv_keeps_groups_equal():
    model = randomize(PATTERNS["grouped"]())
    small, *_ = compress_checked(model, (torch.randn(1, 3, 8, 8),), ratio=0.5)
    grouped = small.get_submodule("grouped")
    assert grouped.groups == 3
    assert grouped.in_channels % 3 == 0 and grouped.out_channels % 3 == 0
    assert grouped.out_channels < 18


def test_depthwise_conv_stays_depthwise():
    small, *_ = compress_checked(randomize(PATTERNS["depthwise"]()), (torch.randn(1, 3, 8, 8),), ratio=0.5)
    dw = small.get_submodule("dw")
    assert dw.groups == dw.in_channels == dw.out_channels < 7
