"""Rule tests for ``fxprune.rules.joins``: cat and stack join tensors, split/chunk/unbind cut them, getitem picks.

Along a cut or joined dim channels map with offsets (channel k of cat's second operand is output channel
offset + k); the other dims tie as they are; a dim that appears or disappears stays whole.
"""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch
from single_op import SingleOp, single_op
from torch import nn

from fxprune.analysis.analyze import analyze_graph
from fxprune.pipeline import traced

RULES = ("concatenate", "getitem", "split", "stack", "unbind")

UNTIED = "does not keep this dim's channels apart"  # the reason a dim left unmentioned by a rule is frozen


def traced_case(model: nn.Module, *inputs, node: str) -> SingleOp:
    """``model`` traced and analyzed, with ``node`` as the op whose relations ``SingleOp`` reports."""
    gm = traced(model.eval(), inputs)
    return SingleOp(analyze_graph(gm), next(n for n in gm.graph.nodes if n.name == node))


def tie_map(case: SingleOp) -> dict:
    """The op's ties as ``{(a, b): None}`` for whole dims, or ``{(a, b): (a_index, b_index)}`` as lists."""
    return {(tuple(t.a), tuple(t.b)): None if t.a_index is None else (list(t.a_index), list(t.b_index))
            for t in case.ties()}


def untied(case: SingleOp, dim) -> bool:
    return any(UNTIED in reason for reason in case.frozen(dim))


def r(start: int, stop: int) -> list[int]:
    return list(range(start, stop))


# ----- concatenate

def test_cat_on_channels_offsets_the_second_operand():
    case = single_op(torch.cat, [torch.randn(2, 3, 7), torch.randn(2, 5, 7)], dim=1)
    assert case.rule.name == "concatenate"
    assert tie_map(case) == {
        (("a", 0), ("op", 0)): None, (("a", 1), ("op", 1)): (r(0, 3), r(0, 3)), (("a", 2), ("op", 2)): None,
        (("b", 0), ("op", 0)): None, (("b", 1), ("op", 1)): (r(0, 5), r(3, 8)), (("b", 2), ("op", 2)): None,
    }
    assert case.same_channels(("a", 1), ("op", 1), b_index=r(0, 3))
    assert case.same_channels(("b", 1), ("op", 1), b_index=r(3, 8))


def test_cat_keeps_the_operands_channels_apart_and_ties_their_other_dims():
    case = single_op(torch.cat, [torch.randn(2, 3, 7), torch.randn(2, 5, 7)], dim=1)
    assert case.apart(("a", 1), ("b", 1))
    assert case.same_channels(("a", 0), ("b", 0)) and case.same_channels(("a", 2), ("b", 2))
    assert case.apart(("a", 1), ("op", 2))


def test_cat_of_three_operands_on_a_negative_dim_offsets_each_by_those_before():
    case = single_op(torch.concat, [torch.randn(2, 3, 7), torch.randn(2, 5, 7), torch.randn(2, 11, 7)], -2)
    assert case.rule.name == "concatenate"
    assert tie_map(case)[(("c", 1), ("op", 1))] == (r(0, 11), r(8, 19))
    assert case.same_channels(("c", 1), ("op", 1), b_index=r(8, 19))
    assert case.apart(("c", 1), ("a", 1)) and case.apart(("c", 1), ("b", 1))


def test_cat_on_the_first_dim_ties_the_channel_dims_whole():
    case = single_op(torch.concatenate, [torch.randn(3, 7), torch.randn(5, 7)])
    assert tie_map(case) == {
        (("a", 0), ("op", 0)): (r(0, 3), r(0, 3)), (("a", 1), ("op", 1)): None,
        (("b", 0), ("op", 0)): (r(0, 5), r(3, 8)), (("b", 1), ("op", 1)): None,
    }


def test_cat_of_a_tensor_with_itself_makes_both_copies_one_channel():
    class Twice(nn.Module):
        def forward(self, x):
            return torch.cat([x, x], dim=1)

    case = traced_case(Twice(), torch.randn(2, 5, 3), node="cat")
    labels = case.labels(("cat", 1))
    assert (labels[:5] == labels[5:]).all()
    assert len(set(labels[:5].tolist())) == 5


def test_concatenate_with_the_axis_keyword_offsets_along_that_axis():
    case = single_op(torch.concatenate, [torch.randn(2, 3, 7), torch.randn(2, 5, 7)], axis=1)
    assert case.same_channels(("b", 1), ("op", 1), b_index=r(3, 8))
    assert case.same_channels(("b", 0), ("op", 0))


# ----- stack

def test_stack_ties_operands_dim_for_dim_around_the_new_dim():
    case = single_op(torch.stack, [torch.randn(3, 5, 7), torch.randn(3, 5, 7)], dim=1)
    assert case.rule.name == "stack"
    assert tie_map(case) == {
        (("a", 0), ("op", 0)): None, (("a", 1), ("op", 2)): None, (("a", 2), ("op", 3)): None,
        (("b", 0), ("op", 0)): None, (("b", 1), ("op", 2)): None, (("b", 2), ("op", 3)): None,
    }
    assert case.same_channels(("a", 1), ("b", 1))  # channel k of every stacked tensor is one channel


def test_stack_freezes_the_new_dim():
    case = single_op(torch.stack, [torch.randn(3, 5, 7), torch.randn(3, 5, 7)], dim=1)
    assert untied(case, ("op", 1))
    assert case.apart(("a", 0), ("op", 1))
    assert case.frozen(("a", 0)) == [] and case.frozen(("op", 2)) == []


def test_stack_on_a_negative_dim_counts_in_the_output():
    case = single_op(torch.stack, [torch.randn(3, 5), torch.randn(3, 5), torch.randn(3, 5)], -1)
    assert tie_map(case) == {((key, d), ("op", d)): None for key in "abc" for d in range(2)}
    assert untied(case, ("op", 2))


def test_stack_with_the_axis_keyword_inserts_the_new_dim_there():
    case = single_op(torch.stack, [torch.randn(2, 5), torch.randn(2, 5)], axis=1)
    assert case.same_channels(("a", 0), ("op", 0))
    assert case.apart(("a", 0), ("op", 1))


# ----- split

def test_split_offsets_each_piece_into_the_input():
    case = single_op(torch.split, torch.randn(2, 11, 7), [3, 5, 3], 1)
    assert case.rule.name == "split"
    ties = tie_map(case)
    assert ties[(("a", 1), ("op#0", 1))] == (r(0, 3), r(0, 3))
    assert ties[(("a", 1), ("op#1", 1))] == (r(3, 8), r(0, 5))
    assert ties[(("a", 1), ("op#2", 1))] == (r(8, 11), r(0, 3))
    assert case.same_channels(("a", 1), ("op#1", 1), a_index=r(3, 8))
    assert case.same_channels(("a", 1), ("op#2", 1), a_index=r(8, 11))


def test_split_ties_the_uncut_dims_and_keeps_the_pieces_apart():
    case = single_op(torch.split, torch.randn(2, 11, 7), [3, 5, 3], 1)
    ties = tie_map(case)
    for piece in ("op#0", "op#1", "op#2"):
        assert ties[(("a", 0), (piece, 0))] is None and ties[(("a", 2), (piece, 2))] is None
    assert len(ties) == 9
    assert case.apart(("op#0", 1), ("op#1", 1)) and case.apart(("op#1", 1), ("op#2", 1))


@pytest.mark.parametrize("op, args, kwargs", [
    ("chunk", (3, 1), {}),                      # 11 in 3 chunks: 4, 4, 3
    (torch.chunk, (3,), {"dim": -2}),
    ("split", (4,), {"dim": 1}),                # pieces of 4: 4, 4, 3
    (torch.tensor_split, ([4, 8], 1), {}),
    ("tensor_split", ([4, 8],), {"dim": 1}),
], ids=["chunk_method", "chunk", "split_method", "tensor_split", "tensor_split_method"])
def test_chunk_split_and_tensor_split_offset_pieces_alike(op, args, kwargs):
    case = single_op(op, torch.randn(2, 11, 7), *args, **kwargs)
    assert case.rule.name == "split"
    ties = tie_map(case)
    assert [ties[(("a", 1), (f"op#{i}", 1))][0] for i in range(3)] == [r(0, 4), r(4, 8), r(8, 11)]
    assert case.same_channels(("a", 1), ("op#2", 1), a_index=r(8, 11))


def test_tensor_split_with_decreasing_indices_maps_the_overlapping_piece_from_its_start():
    case = single_op(torch.tensor_split, torch.randn(2, 7, 3), [3, 1], dim=1)
    assert case.same_channels(("a", 1), ("op#2", 1), a_index=r(1, 7))


# ----- unbind

def test_unbind_ties_the_other_dims_of_each_piece():
    case = single_op(torch.unbind, torch.randn(3, 5, 7), 1)
    assert case.rule.name == "unbind"
    assert tie_map(case) == {
        **{(("a", 0), (f"op#{i}", 0)): None for i in range(5)},
        **{(("a", 2), (f"op#{i}", 1)): None for i in range(5)},
    }
    assert case.same_channels(("op#0", 1), ("op#4", 1))


def test_unbind_freezes_the_unbound_dim():
    case = single_op(torch.unbind, torch.randn(3, 5, 7), 1)
    assert untied(case, ("a", 1))
    assert case.apart(("a", 1), ("op#0", 1))
    assert case.frozen(("a", 2)) == []


def test_unbind_method_on_a_negative_dim_drops_the_last_dim():
    case = single_op("unbind", torch.randn(3, 5, 7), dim=-1)
    assert tie_map(case) == {
        **{(("a", 0), (f"op#{i}", 0)): None for i in range(7)},
        **{(("a", 1), (f"op#{i}", 1)): None for i in range(7)},
    }
    assert untied(case, ("a", 2))


# ----- getitem

def test_getitem_slice_on_channels_offsets_into_the_input():
    case = single_op(operator.getitem, torch.randn(2, 11, 3), (slice(None), slice(2, 7)))
    assert case.rule.name == "getitem"
    assert tie_map(case) == {
        (("a", 0), ("op", 0)): (r(0, 2), r(0, 2)),
        (("a", 1), ("op", 1)): (r(2, 7), r(0, 5)),
        (("a", 2), ("op", 2)): (r(0, 3), r(0, 3)),
    }
    assert case.same_channels(("a", 1), ("op", 1), a_index=r(2, 7))


def test_getitem_slice_leaves_the_unread_channels_out_of_the_output():
    case = single_op(operator.getitem, torch.randn(2, 11, 3), (slice(None), slice(2, 7)))
    unread = case.labels(("a", 1))[[0, 1, 7, 8, 9, 10]]
    assert not np.isin(unread, case.labels(("op", 1))).any()
    assert case.frozen(("a", 1)) == []  # a slice's unread slots are free, not frozen


def test_getitem_integer_index_drops_the_dim_and_leaves_it_frozen():
    case = single_op(operator.getitem, torch.randn(3, 5, 7), (slice(None), 2))
    assert tie_map(case) == {(("a", 0), ("op", 0)): (r(0, 3), r(0, 3)), (("a", 2), ("op", 1)): (r(0, 7), r(0, 7))}
    assert untied(case, ("a", 1))
    assert case.apart(("a", 1), ("op", 1))


def test_getitem_none_and_ellipsis_shift_the_output_dims():
    case = single_op(operator.getitem, torch.randn(3, 5, 7), (None, Ellipsis, slice(1, 4)))
    assert case.analysis.table.shapes["op"] == (1, 3, 5, 3)
    assert tie_map(case) == {
        (("a", 0), ("op", 1)): (r(0, 3), r(0, 3)),
        (("a", 1), ("op", 2)): (r(0, 5), r(0, 5)),
        (("a", 2), ("op", 3)): (r(1, 4), r(0, 3)),
    }
    assert untied(case, ("op", 0))


def test_getitem_slice_with_a_step_freezes_that_dim():
    case = single_op(operator.getitem, torch.randn(3, 11), (slice(None), slice(None, None, 2)))
    assert set(tie_map(case)) == {(("a", 0), ("op", 0))}
    assert untied(case, ("a", 1)) and untied(case, ("op", 1))


def test_getitem_with_a_tensor_index_ties_nothing():
    case = single_op(operator.getitem, torch.randn(5, 7), (slice(None), torch.tensor([0, 2, 3])))
    assert case.ties() == []
    assert untied(case, ("a", 0)) and untied(case, ("a", 1)) and untied(case, ("op", 1))


class SplitThenPick(nn.Module):
    def forward(self, x):
        first, second = torch.split(x, [3, 8], dim=1)
        return first.relu(), second.relu()


def test_getitem_of_a_tuple_element_ties_it_whole_to_the_element():
    case = traced_case(SplitThenPick(), torch.randn(2, 11, 5), node="getitem_1")
    assert case.rule.name == "getitem"
    assert tie_map(case) == {(("split#1", d), ("getitem_1", d)): None for d in range(3)}
    assert case.same_channels(("x", 1), ("getitem_1", 1), a_index=r(3, 11))


def test_getitem_of_a_tuple_element_does_not_reach_the_other_elements():
    case = traced_case(SplitThenPick(), torch.randn(2, 11, 5), node="getitem")
    assert case.apart(("getitem", 1), ("split#1", 1))
    assert case.same_channels(("getitem", 1), ("x", 1), b_index=r(0, 3))
    assert case.frozen(("split#1", 1)) == []  # picking element 0 says nothing about element 1


def test_getitem_of_a_tuple_element_by_negative_index_ties_the_last_element():
    class LastPiece(nn.Module):
        def forward(self, x):
            return torch.split(x, [3, 8], dim=1)[-1].relu()

    case = traced_case(LastPiece(), torch.randn(2, 11, 5), node="getitem")
    assert case.same_channels(("split#1", 1), ("getitem", 1))


def test_getitem_with_a_bool_index_is_not_read_as_position_one_and_freezes():
    """``x[True]`` adds a size-1 dim (a mask of one): the rule declines rather than read it as ``x[1]``."""
    case = single_op(operator.getitem, torch.randn(3, 5), True)
    assert case.analysis.table.shapes["op"] == (1, 3, 5)
    assert case.ties() == [] and case.frozen(("a", 1))
