"""ATen ops (torch.export's capture): aliases of the FX rules, and the ones with rules of their own."""

import torch
from single_op import single_op

from fxprune.rules import aten as aten_rules
from fxprune.rules import base

RULES = ("batch_norm_aten",)
aten = torch.ops.aten


def test_every_alias_names_an_op_that_has_a_rule():
    missing = [str(op) for op, target in aten_rules.ALIASES.items() if base.find_rule(base._key_of(target)) is None]
    assert not missing


def test_an_aliased_aten_op_gets_the_rule_and_facts_of_its_target():
    case = single_op(aten.conv2d.default, torch.randn(1, 3, 7, 7), torch.randn(5, 3, 3, 3))
    assert case.rule.name == "conv_function" and case.rule.latency == "producer"
    assert case.same_channels(("a", 1), ("b", 1)) and case.same_channels(("op", 1), ("b", 0))


def test_aten_batch_norm_ties_its_vectors_in_their_own_order():
    x, weight, bias, mean, var = torch.randn(2, 5, 3, 3), torch.rand(5), torch.rand(5), torch.rand(5), torch.rand(5)
    case = single_op(aten.batch_norm.default, x, weight, bias, mean, var, False, 0.1, 1e-5, False)
    assert case.rule.name == "batch_norm_aten"
    for vector in "bcde":
        assert case.same_channels((vector, 0), ("op", 1))
    assert case.apart(("b", 0), ("op", 0))


def test_an_aten_op_without_a_rule_freezes_what_it_touches():
    case = single_op(aten.select.int, torch.randn(2, 5, 3), 1, 0)
    assert any("no rule for function" in reason for reason in case.frozen(("a", 1)))
