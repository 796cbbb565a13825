"""The registry: every rule has a rule-level test, registering is checked, and users can add rules."""

import importlib
import pathlib

import pytest
import torch
import torch.fx
import torch.nn as nn
from helpers import compress_checked, randomize

import fxprune
from fxprune.rules import base

HERE = pathlib.Path(__file__).parent


def _covered() -> set[str]:
    names = set()
    for path in sorted(HERE.glob("test_*.py")):
        names.update(getattr(importlib.import_module(f"rules.{path.stem}"), "RULES", ()))
    return names


@pytest.mark.parametrize("rule", sorted({r.couple.__name__ for r in base._REGISTRY.values()
                                         if r.couple.__module__.startswith("fxprune.rules")}))
def test_every_rule_has_a_rule_level_test(rule):
    assert rule in _covered(), f"rule {rule} is in no RULES tuple of tests/rules/test_*.py: add its test"


def test_registering_a_target_twice_is_an_error():
    with pytest.raises(ValueError, match="registered twice"):
        fxprune.rules.register(nn.Conv2d)(lambda view: [])


def test_a_fact_with_an_unknown_value_is_an_error():
    with pytest.raises(ValueError, match="latency"):
        fxprune.rules.register("a_method_nobody_has", latency="cheap")(lambda view: [])


@torch.fx.wrap
def soft_threshold(x: torch.Tensor, width: float) -> torch.Tensor:
    """An op fxprune has no rule for: elementwise, so channel i in is channel i out."""
    return torch.sign(x) * torch.clamp(x.abs() - width, min=0)


class Thresholded(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 11, 3, padding=1), nn.Conv2d(11, 5, 1)

    def forward(self, x):
        return self.conv2(soft_threshold(self.conv1(x), 0.1))


@pytest.fixture
def user_rule():
    def couple(view):
        return fxprune.rules.same_dims(view.tensor_args()[0], view.out(), view)

    fxprune.rules.register(soft_threshold)(couple)
    yield
    fxprune.rules.unregister(soft_threshold)


def test_an_op_without_a_rule_freezes_what_it_touches_and_says_so():
    report = fxprune.analyze(Thresholded(), torch.randn(1, 3, 8, 8))
    assert report.prunable_channels == 0
    assert any("no rule for function" in g.frozen_reason and "soft_threshold" in g.frozen_reason
               for g in report.frozen)


def test_a_users_rule_makes_the_op_prunable_and_the_oracle_holds(user_rule):
    x = torch.randn(2, 3, 8, 8)
    report = fxprune.analyze(Thresholded(), x)
    assert report.prunable_channels == 11
    small, _, plan, result = compress_checked(randomize(Thresholded()), (x,), ratio=0.5)
    assert small.conv1.out_channels == small.conv2.in_channels == 6
    assert result.exact


def test_unregister_removes_the_users_rule(user_rule):
    fxprune.rules.unregister(soft_threshold)
    assert fxprune.analyze(Thresholded(), torch.randn(1, 3, 8, 8)).prunable_channels == 0
    fxprune.rules.register(soft_threshold)(lambda view: [])  # the fixture unregisters it again
