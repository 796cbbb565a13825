"""Reshape rules: ``reshape`` (view/reshape), ``regroup`` (flatten, unflatten, (un)squeeze), ``permute``, ``expand``.

A merge (flatten of C×H×W) maps channel c to features c·H·W … (c+1)·H·W − 1; a split of C into
(G, C/G) maps channel g·(C/G) + i to inner index i and keeps the group axis whole; a permutation
moves each dim; ``expand`` ties the dims it does not repeat.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
from single_op import SingleOp, single_op

from fxprune.analysis.analyze import analyze_graph
from fxprune.pipeline import traced

RULES = ("reshape", "regroup", "permute", "expand", "reshape_as")

KEEPS = "does not keep this dim's channels apart"


def slot_map(case, coarse, fine) -> np.ndarray:
    """For each slot of ``fine``, the slot of ``coarse`` that is one channel with it (-1 where none is)."""
    coarse_labels = case.labels(coarse)
    assert len(set(coarse_labels)) == len(coarse_labels), f"{coarse} holds one channel twice"
    where = {label: slot for slot, label in enumerate(coarse_labels)}
    return np.array([where.get(label, -1) for label in case.labels(fine)])


def tie_pairs(case) -> set:
    return {(tuple(t.a), tuple(t.b)) for t in case.ties()}


def traced_case(model, x, node: str) -> SingleOp:
    """``model`` traced and analyzed, with ``node`` as the op whose relations ``SingleOp`` reports."""
    gm = traced(model, (x,))
    return SingleOp(analyze_graph(gm), next(n for n in gm.graph.nodes if n.name == node))


# ----- reshape (view / reshape)


@pytest.mark.parametrize("op, args", [("view", (3, -1)), ("reshape", (3, 385)), (torch.reshape, ((3, -1),))],
                         ids=str)
def test_flattening_c_h_w_maps_channel_c_to_features_c_hw_to_c_plus_1_hw(op, args):
    """(3, 5, 7, 11) → (3, 385): features 77c … 77c + 76 are channel c; batch stays as it is."""
    case = single_op(op, torch.randn(3, 5, 7, 11), *args)
    assert case.rule.name == "reshape"
    mapping = slot_map(case, ("a", 1), ("op", 1))
    assert np.array_equal(mapping, np.arange(385) // 77)
    assert mapping[76] == 0 and mapping[77] == 1 and mapping[384] == 4
    assert case.same_channels(("a", 0), ("op", 0))
    assert tie_pairs(case) == {(("a", 0), ("op", 0)), (("a", 1), ("op", 1))}


def test_flattening_keeps_the_merged_spatial_dims_whole():
    """Only the channel dim carries the features; H and W are frozen, not tied to them."""
    case = single_op("view", torch.randn(3, 5, 7, 11), 3, -1)
    for dim in (2, 3):
        assert case.apart(("a", dim), ("op", 1))
        assert any(KEEPS in reason and "Tensor.view" in reason for reason in case.frozen(("a", dim)))


def test_view_splitting_channels_into_groups_maps_channel_g_c_plus_i_to_inner_index_i():
    """Channel shuffle's first view: (1, 15, 7, 11) → (1, 3, 5, 7, 11); channel 5g + i is inner index i."""
    case = single_op("view", torch.randn(1, 15, 7, 11), 1, 3, 5, 7, 11)
    assert np.array_equal(slot_map(case, ("op", 2), ("a", 1)), np.arange(15) % 5)
    assert case.same_channels(("a", 1), ("a", 1), a_index=[0, 5], b_index=[5, 10])
    assert not case.same_channels(("a", 1), ("a", 1), a_index=[0], b_index=[1])
    assert case.same_channels(("a", 2), ("op", 3)) and case.same_channels(("a", 3), ("op", 4))


def test_view_splitting_channels_keeps_the_group_axis_whole():
    case = single_op("view", torch.randn(1, 15, 7, 11), 1, 3, 5, 7, 11)
    assert case.apart(("a", 1), ("op", 1))
    assert any(KEEPS in reason for reason in case.frozen(("op", 1)))
    assert case.frozen(("op", 2)) == []


def test_reshape_that_moves_channel_boundaries_ties_neither_dim():
    """(3, 5, 7) → (3, 7, 5): output row 1 holds the end of channel 0 and the start of channel 1."""
    case = single_op("reshape", torch.randn(3, 5, 7), 3, 7, 5)
    assert tie_pairs(case) == {(("a", 0), ("op", 0))}
    for dim in (1, 2):
        assert any(KEEPS in reason for reason in case.frozen(("a", dim)))
        assert case.apart(("a", dim), ("op", 1)) and case.apart(("a", dim), ("op", 2))


def test_flattening_batch_and_channels_together_ties_features_to_the_batch_dim():
    """(3, 5, 7) → (105,): the outermost merged dim of size > 1 (batch) carries the features; channels freeze."""
    case = single_op("reshape", torch.randn(3, 5, 7), -1)
    assert np.array_equal(slot_map(case, ("a", 0), ("op", 0)), np.arange(105) // 35)
    assert case.frozen(("a", 1)) and case.apart(("a", 1), ("op", 0))


class ChannelShuffle(nn.Module):
    """ShuffleNet's shuffle between two convs: view (n, 3, 5, h, w) → transpose(1, 2) → reshape (n, 15, h, w)."""

    def __init__(self, transpose=True):
        super().__init__()
        self.transpose = transpose
        self.c1, self.c2 = nn.Conv2d(2, 15, 1), nn.Conv2d(15, 7, 1)

    def forward(self, x):
        y = self.c1(x)
        n, c, h, w = y.shape
        y = y.view(n, 3, c // 3, h, w)
        if self.transpose:
            y = y.transpose(1, 2)
        return self.c2(y.reshape(n, c, h, w))


def test_channel_shuffle_ties_conv_rows_5g_plus_i_to_next_conv_columns_3i_plus_g():
    case = traced_case(ChannelShuffle(), torch.randn(1, 2, 4, 4), "reshape")
    inner_of_row = slot_map(case, ("view", 2), ("param:c1.weight", 0))
    inner_of_column = slot_map(case, ("view", 2), ("param:c2.weight", 1))
    assert np.array_equal(inner_of_row, np.arange(15) % 5)
    assert np.array_equal(inner_of_column, np.arange(15) // 3)
    (group,) = case.analysis.groups
    assert len(group.channels) == 5


def test_merging_a_split_back_prefers_the_inner_axis_over_the_group_axis():
    """view (n, 3, 5) then reshape (n, 15) untransposed: the merge keys on inner index i again, so the
    channels stay prunable (row 5g + i goes with column 5g' + i), rather than on the frozen group axis."""
    case = traced_case(ChannelShuffle(transpose=False), torch.randn(1, 2, 4, 4), "reshape")
    assert np.array_equal(slot_map(case, ("view", 2), ("param:c1.weight", 0)), np.arange(15) % 5)
    assert np.array_equal(slot_map(case, ("view", 2), ("param:c2.weight", 1)), np.arange(15) % 5)
    assert case.apart(("view", 1), ("reshape", 1))
    assert len(case.analysis.groups) == 1


# ----- regroup (flatten, unflatten, squeeze, unsqueeze)


@pytest.mark.parametrize("op, args", [(torch.flatten, (1,)), ("flatten", (1,)), (nn.Flatten(), ())], ids=str)
def test_flatten_from_dim_1_maps_channel_c_to_features_c_hw_to_c_plus_1_hw(op, args):
    case = single_op(op, torch.randn(3, 5, 7, 11), *args)
    assert case.rule.name == "regroup"
    assert np.array_equal(slot_map(case, ("a", 1), ("op", 1)), np.arange(385) // 77)
    assert case.same_channels(("a", 0), ("op", 0))
    assert case.frozen(("a", 2)) and case.frozen(("a", 3))


def test_flatten_of_every_dim_freezes_channels_and_keys_features_on_the_batch():
    case = single_op(torch.flatten, torch.randn(3, 5, 7, 11))
    assert np.array_equal(slot_map(case, ("a", 0), ("op", 0)), np.arange(1155) // 385)
    reasons = case.frozen(("a", 1))
    assert reasons and all(KEEPS in reason and "torch.flatten" in reason for reason in reasons)


@pytest.mark.parametrize("op, args", [("unflatten", (1, (5, 7))), (torch.unflatten, (1, (5, 7))),
                                      (nn.Unflatten(1, (5, 7)), ())], ids=str)
def test_unflatten_maps_feature_7c_plus_j_to_inner_index_j(op, args):
    """(3, 35, 11) → (3, 5, 7, 11): a split, so the inner dim (7) carries and the outer (5) is a group axis."""
    case = single_op(op, torch.randn(3, 35, 11), *args)
    assert case.rule.name == "regroup"
    assert np.array_equal(slot_map(case, ("op", 2), ("a", 1)), np.arange(35) % 7)
    assert case.frozen(("op", 1)) and case.apart(("a", 1), ("op", 1))
    assert case.same_channels(("a", 0), ("op", 0)) and case.same_channels(("a", 2), ("op", 3))


@pytest.mark.parametrize("op", [torch.unsqueeze, "unsqueeze"], ids=str)
def test_unsqueeze_shifts_every_dim_after_the_new_one(op):
    case = single_op(op, torch.randn(5, 7), 1)
    assert case.analysis.table.shapes["op"] == (5, 1, 7)
    assert tie_pairs(case) == {(("a", 0), ("op", 0)), (("a", 1), ("op", 2))}
    assert case.frozen(("op", 1))


@pytest.mark.parametrize("op", [torch.squeeze, "squeeze"], ids=str)
def test_squeeze_ties_each_kept_dim_to_its_new_position(op):
    case = single_op(op, torch.randn(1, 5, 1, 7))
    assert tie_pairs(case) == {(("a", 1), ("op", 0)), (("a", 3), ("op", 1))}
    assert case.apart(("a", 1), ("op", 1))


class FlattenHead(nn.Module):
    """A conv feeding a linear layer through ``flatten``: (1, 5, 3, 7) → (1, 105)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 5, 1), nn.Linear(105, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv(x), 1))


def test_flatten_ties_each_conv_row_to_21_linear_columns():
    case = traced_case(FlattenHead(), torch.randn(1, 3, 3, 7), "flatten")
    assert np.array_equal(slot_map(case, ("param:conv.weight", 0), ("param:fc.weight", 1)), np.arange(105) // 21)


# ----- permute (permute, transpose, swapaxes)


@pytest.mark.parametrize("op, args", [("permute", (0, 2, 3, 1)), ("permute", ([0, 2, 3, 1],)),
                                      (torch.permute, ((0, 2, 3, 1),))], ids=str)
def test_permute_to_channels_last_moves_channels_to_the_last_dim(op, args):
    case = single_op(op, torch.randn(3, 5, 7, 11), *args)
    assert case.rule.name == "permute"
    assert case.analysis.table.shapes["op"] == (3, 7, 11, 5)
    assert tie_pairs(case) == {(("a", 0), ("op", 0)), (("a", 2), ("op", 1)), (("a", 3), ("op", 2)),
                               (("a", 1), ("op", 3))}
    assert case.same_channels(("a", 1), ("op", 3)) and case.apart(("a", 1), ("op", 1))


@pytest.mark.parametrize("op, args", [("transpose", (1, -1)), (torch.transpose, (-1, 1)), (torch.swapaxes, (1, 3)),
                                      ("swapaxes", (3, 1)), (torch.swapdims, (1, 3))], ids=str)
def test_transpose_swaps_exactly_its_two_dims(op, args):
    case = single_op(op, torch.randn(3, 5, 7, 11), *args)
    assert case.rule.name == "permute"
    assert tie_pairs(case) == {(("a", 0), ("op", 0)), (("a", 3), ("op", 1)), (("a", 2), ("op", 2)),
                               (("a", 1), ("op", 3))}


def test_transpose_of_two_equal_sized_dims_ties_each_to_the_other_not_to_itself():
    """(3, 5, 5).transpose(1, 2): equal sizes must not make the rule tie dim 1 to dim 1."""
    case = single_op("transpose", torch.randn(3, 5, 5), 1, 2)
    assert tie_pairs(case) == {(("a", 0), ("op", 0)), (("a", 1), ("op", 2)), (("a", 2), ("op", 1))}
    assert case.apart(("a", 1), ("op", 1)) and case.apart(("a", 2), ("op", 2))


@pytest.mark.parametrize("op, kwargs", [("permute", {"dims": (0, 2, 3, 1)}),
                                        (torch.swapaxes, {"axis0": 1, "axis1": 3})], ids=["permute-dims", "swapaxes"])
def test_permute_given_its_order_by_keyword_still_moves_the_channels(op, kwargs):
    case = single_op(op, torch.randn(3, 5, 7, 11), **kwargs)
    assert case.same_channels(("a", 1), ("op", 3))


def test_swapdims_method_swaps_its_two_dims_like_the_function():
    case = single_op("swapdims", torch.randn(3, 5, 7, 11), 1, 3)
    assert case.same_channels(("a", 1), ("op", 3))


# ----- expand


@pytest.mark.parametrize("sizes", [(3, 5, 7, 11), (-1, -1, 7, 11)], ids=str)
def test_expand_ties_the_dims_it_keeps_and_freezes_the_ones_it_repeats(sizes):
    """(3, 5, 1, 1) → (3, 5, 7, 11): channels and batch are copied; the size-1 dims are broadcast."""
    case = single_op("expand", torch.randn(3, 5, 1, 1), *sizes)
    assert case.rule.name == "expand"
    assert tie_pairs(case) == {(("a", 0), ("op", 0)), (("a", 1), ("op", 1))}
    for dim in (2, 3):
        assert any(KEEPS in reason and "Tensor.expand" in reason for reason in case.frozen(("op", dim)))
        assert case.apart(("a", dim), ("op", dim))


def test_expand_with_new_leading_dims_aligns_the_input_from_the_right():
    """(5, 1) → (3, 5, 7): input dim 0 is output dim 1, not output dim 0."""
    case = single_op("expand", torch.randn(5, 1), 3, 5, 7)
    assert tie_pairs(case) == {(("a", 0), ("op", 1))}
    assert case.frozen(("op", 0)) and case.frozen(("op", 2))
    assert case.apart(("a", 0), ("op", 0))


@pytest.mark.parametrize("op", ["reshape_as", "view_as"])
def test_reshape_as_regroups_into_the_other_operands_shape_and_ties_its_dims(op):
    case = single_op(op, torch.randn(2, 6, 5), torch.randn(2, 3, 2, 5))
    assert case.rule.name == "reshape_as"
    assert case.same_channels(("a", 2), ("op", 3)) and case.same_channels(("b", 3), ("op", 3))
    assert case.same_channels(("b", 1), ("op", 1)) and case.apart(("a", 2), ("op", 1))

