"""Rule tests for ``fxprune.rules.attention``: matmul/bmm/@ and einsum tie dims by their role in the product.

A contracted dim is one channel in both operands; the free dims of each operand are the output's.
"""

from __future__ import annotations

import operator

import pytest
import torch
from single_op import SingleOp, single_op
from torch import nn

from fxprune.analysis.analyze import analyze_graph
from fxprune.pipeline import traced

RULES = ("einsum", "matmul")

UNTIED = "does not keep this dim's channels apart"  # the reason a dim left unmentioned by a rule is frozen


def whole_ties(case) -> set:
    """The op's ties as ``(a, b)`` pairs of ``(key, dim)``; every tie of these rules spans a whole dim."""
    ties = case.ties()
    assert all(t.a_index is None and t.b_index is None for t in ties)
    return {(tuple(t.a), tuple(t.b)) for t in ties}


def traced_case(model: nn.Module, *inputs, node: str) -> SingleOp:
    """``model`` traced and analyzed, with ``node`` as the op whose relations ``SingleOp`` reports."""
    gm = traced(model.eval(), inputs)
    return SingleOp(analyze_graph(gm), next(n for n in gm.graph.nodes if n.name == node))


# ----- matmul

def test_matmul_ties_exactly_contraction_rows_columns_and_batch():
    case = single_op(torch.matmul, torch.randn(2, 5, 7), torch.randn(2, 7, 3))
    assert case.rule.name == "matmul"
    assert whole_ties(case) == {
        (("a", 2), ("b", 1)),   # k: contracted
        (("a", 1), ("op", 1)),  # n: rows of a are rows of the output
        (("b", 2), ("op", 2)),  # m: columns of b are columns of the output
        (("a", 0), ("op", 0)),  # batch
        (("b", 0), ("op", 0)),
    }
    assert case.same_channels(("a", 2), ("b", 1))
    assert case.same_channels(("a", 0), ("b", 0)) and case.same_channels(("b", 0), ("op", 0))


def test_matmul_keeps_the_contracted_dim_apart_from_the_output():
    case = single_op(torch.matmul, torch.randn(2, 5, 7), torch.randn(2, 7, 3))
    for dim in range(3):
        assert case.apart(("a", 2), ("op", dim))
        assert case.apart(("b", 1), ("op", dim))
    assert case.apart(("a", 1), ("b", 2))  # rows and columns are different channels
    assert case.apart(("a", 1), ("a", 2))


@pytest.mark.parametrize("op", [operator.matmul, torch.bmm, "matmul", "bmm"], ids=["at", "bmm", "method", "bmm_method"])
def test_matmul_rule_serves_the_operator_bmm_and_the_methods(op):
    case = single_op(op, torch.randn(2, 5, 7), torch.randn(2, 7, 3))
    assert case.rule.name == "matmul"
    assert case.same_channels(("a", 2), ("b", 1))
    assert case.same_channels(("a", 1), ("op", 1)) and case.same_channels(("b", 2), ("op", 2))


def test_matmul_aligns_a_broadcast_operand_from_the_right():
    # (5, 7) @ (2, 7, 3) -> (2, 5, 3): a's rows are the output's dim 1, not dim 0
    case = single_op(torch.matmul, torch.randn(5, 7), torch.randn(2, 7, 3))
    assert whole_ties(case) == {
        (("a", 1), ("b", 1)),
        (("a", 0), ("op", 1)),
        (("b", 2), ("op", 2)),
        (("b", 0), ("op", 0)),
    }
    assert case.apart(("a", 0), ("op", 0))


def test_matmul_freezes_a_size_one_batch_dim_that_broadcasts():
    case = single_op(torch.matmul, torch.randn(1, 5, 7), torch.randn(3, 7, 11))
    assert any(UNTIED in reason for reason in case.frozen(("a", 0)))
    assert case.frozen(("b", 0)) == []
    assert case.same_channels(("b", 0), ("op", 0))
    assert case.apart(("a", 0), ("op", 0))


def test_matmul_with_a_vector_operand_ties_nothing_and_freezes_every_dim():
    case = single_op(torch.matmul, torch.randn(5, 7), torch.randn(7))
    assert case.ties() == []
    for dim in [("a", 0), ("a", 1), ("b", 0), ("op", 0)]:
        assert any(UNTIED in reason for reason in case.frozen(dim)), dim
    assert case.apart(("a", 1), ("b", 0))


def test_matmul_of_a_tensor_with_itself_makes_its_rows_and_columns_one_channel():
    # x @ x contracts x's columns with x's rows: removing channel j removes row j and column j
    class SelfProduct(nn.Module):
        def forward(self, x):
            return x @ x

    case = traced_case(SelfProduct(), torch.randn(5, 5), node="matmul")
    assert case.rule.name == "matmul"
    assert case.same_channels(("x", 0), ("x", 1))
    assert case.same_channels(("x", 0), ("matmul", 0)) and case.same_channels(("x", 1), ("matmul", 1))


# ----- einsum

def test_einsum_ties_every_dim_a_letter_labels_exactly():
    case = single_op(torch.einsum, "bij,bjk->bik", torch.randn(2, 5, 7), torch.randn(2, 7, 3))
    assert case.rule.name == "einsum"
    assert whole_ties(case) == {
        (("a", 0), ("b", 0)),   # b
        (("a", 0), ("op", 0)),
        (("a", 1), ("op", 1)),  # i
        (("a", 2), ("b", 1)),   # j: contracted
        (("b", 2), ("op", 2)),  # k
    }


def test_einsum_keeps_dims_of_different_letters_apart():
    case = single_op(torch.einsum, "bij,bjk->bik", torch.randn(2, 5, 7), torch.randn(2, 7, 3))
    assert case.apart(("a", 2), ("op", 1)) and case.apart(("a", 2), ("op", 2))  # j is not in the output
    assert case.apart(("a", 1), ("b", 2))  # i and k
    assert case.apart(("a", 0), ("a", 1))


def test_einsum_reads_operands_passed_as_a_list_and_spaces_in_the_equation():
    case = single_op(torch.einsum, "ij, jk -> ik", [torch.randn(5, 7), torch.randn(7, 3)])
    assert whole_ties(case) == {(("a", 1), ("b", 0)), (("a", 0), ("op", 0)), (("b", 1), ("op", 1))}


def test_einsum_freezes_a_dim_summed_away_within_one_operand():
    case = single_op(torch.einsum, "ij->i", torch.randn(5, 7))
    assert whole_ties(case) == {(("a", 0), ("op", 0))}
    assert any(UNTIED in reason for reason in case.frozen(("a", 1)))
    assert case.apart(("a", 1), ("op", 0))


def test_einsum_repeated_letter_in_one_operand_ties_the_diagonal_dims():
    case = single_op(torch.einsum, "ii->i", torch.randn(5, 5))
    assert whole_ties(case) == {(("a", 0), ("a", 1)), (("a", 0), ("op", 0))}
    assert case.same_channels(("a", 1), ("op", 0))


def test_einsum_does_not_tie_a_size_one_dim_that_broadcasts():
    case = single_op(torch.einsum, "ij,ij->ij", torch.randn(5, 7), torch.randn(1, 7))
    assert whole_ties(case) == {(("a", 0), ("op", 0)), (("a", 1), ("b", 1)), (("a", 1), ("op", 1))}
    assert any(UNTIED in reason for reason in case.frozen(("b", 0)))
    assert case.apart(("b", 0), ("op", 0))


@pytest.mark.parametrize("equation", ["...ij,...jk->...ik", "ij,jk"], ids=["ellipsis", "implicit_output"])
def test_einsum_with_an_ellipsis_or_no_explicit_output_ties_nothing(equation):
    case = single_op(torch.einsum, equation, torch.randn(5, 7), torch.randn(7, 3))
    assert case.ties() == []
    for dim in [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("op", 0), ("op", 1)]:
        assert any(UNTIED in reason for reason in case.frozen(dim)), dim
    assert case.apart(("a", 1), ("b", 0))
