"""Elementwise rules: ``unary`` (channel i in is channel i out) and ``broadcast`` (operands aligned from the right)."""

import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from single_op import single_op

RULES = ("unary", "broadcast", "cast_like")


@pytest.mark.parametrize("op", ["type_as", torch.ops.aten.type_as.default], ids=["method", "aten"])
def test_type_as_ties_its_input_and_only_reads_the_other_operands_dtype(op):
    case = single_op(op, torch.randn(2, 5), torch.randn(2, 3, 4, 4).double())
    assert case.rule.name == "cast_like"
    assert case.same_channels(("a", 1), ("op", 1)) and case.apart(("a", 0), ("op", 1))
    assert not any(case.frozen(("b", dim)) for dim in range(4))  # a grid built in a feature map's dtype


@pytest.mark.parametrize("op", [nn.ReLU(), nn.SiLU(), nn.Dropout(0.1), F.gelu, torch.sigmoid, "clamp_min", "to"],
                         ids=str)
def test_unary_ties_every_dim_of_its_input_to_its_output(op):
    args = (0.0,) if op == "clamp_min" else (torch.float32,) if op == "to" else ()
    case = single_op(op, torch.randn(2, 5, 7, 3), *args)
    assert case.rule.name == "unary"
    for dim in range(4):
        assert case.same_channels(("a", dim), ("op", dim))
    assert case.apart(("a", 1), ("op", 2))


def test_unary_whose_output_has_another_shape_freezes_instead_of_guessing():
    """``x.pow(y)`` broadcasts x (5,1) to (5,7): the unary rule does not apply, so x's dims are frozen."""
    case = single_op("pow", torch.rand(5, 1), torch.rand(5, 7))
    assert case.ties() == []
    assert any("does not keep this dim's channels apart" in reason for reason in case.frozen(("a", 0)))


def test_residual_add_ties_both_operands_and_the_sum():
    case = single_op(operator.add, torch.randn(2, 7, 3, 3), torch.randn(2, 7, 3, 3))
    assert case.same_channels(("a", 1), ("b", 1)) and case.same_channels(("a", 1), ("op", 1))


def test_squeeze_excite_gate_broadcast_along_space_ties_channels_only():
    """``x (2,5,7,7) * gate (2,5,1,1)``: the gate's channels are x's; its size-1 spatial dims stay apart."""
    case = single_op(operator.mul, torch.randn(2, 5, 7, 7), torch.randn(2, 5, 1, 1))
    assert case.same_channels(("b", 1), ("op", 1)) and case.same_channels(("a", 1), ("op", 1))
    assert case.apart(("b", 2), ("op", 2))


def test_an_operand_broadcast_along_channels_is_not_tied_to_them():
    """A per-position scale (2,1,7,7) times x (2,5,7,7): its single channel is not x's channel 0."""
    case = single_op(operator.mul, torch.randn(2, 5, 7, 7), torch.randn(2, 1, 7, 7))
    assert case.apart(("b", 1), ("op", 1))
    assert case.same_channels(("b", 2), ("op", 2))


def test_operands_of_different_rank_align_from_the_right():
    """``x (2,3,11) + bias (11,)``: the bias's only dim is x's last, not its first."""
    case = single_op(torch.add, torch.randn(2, 3, 11), torch.randn(11))
    assert case.same_channels(("b", 0), ("op", 2))
    assert case.apart(("b", 0), ("op", 1))


def test_expand_as_takes_the_other_operands_shape():
    case = single_op("expand_as", torch.randn(1, 5, 1), torch.randn(3, 5, 7))
    assert case.same_channels(("a", 1), ("op", 1)) and case.same_channels(("b", 1), ("op", 1))
    assert case.same_channels(("b", 2), ("op", 2)) and case.apart(("a", 2), ("op", 2))


def test_facts_on_elementwise_rules():
    """The latency model's classes and the shape shortcut live on these rules."""
    assert single_op(nn.ReLU(), torch.randn(1, 3, 2, 2)).rule.latency == "fusable"
    assert single_op(nn.Dropout(), torch.randn(1, 3)).rule.latency == "free"
    assert single_op(nn.SiLU(), torch.randn(1, 3)).rule.latency is None
    assert single_op(operator.add, torch.randn(1, 3), torch.randn(1, 3)).rule.latency == "fusable"
    assert single_op(operator.mul, torch.randn(1, 3), torch.randn(1, 3)).rule.latency is None
    assert single_op(nn.GELU(), torch.randn(1, 3)).rule.same_shape is not None


@pytest.mark.parametrize("op", [torch.addcmul, torch.ops.aten.addcmul.default, "addcmul"],
                         ids=["torch", "aten", "method"])
def test_addcmul_broadcasts_its_three_operands(op):
    case = single_op(op, torch.randn(2, 5, 3), torch.randn(1, 5, 1), torch.randn(2, 5, 3))
    assert case.rule.name == "broadcast"
    assert case.same_channels(("a", 1), ("b", 1)) and case.same_channels(("b", 1), ("c", 1))
    assert case.same_channels(("c", 2), ("op", 2)) and case.apart(("a", 1), ("op", 2))

