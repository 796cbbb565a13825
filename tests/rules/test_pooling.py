"""Pooling-module rules: ``pool``, ``resize``, ``pad``, ``reduction``, ``softmax``.

Each keeps some dims slot for slot (batch, channels, the dims it does not touch) and makes the others
anew; those must stay whole (frozen), never tied to the input dim of the same size.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from single_op import single_op

RULES = ("pool", "resize", "pad", "reduction", "softmax")

KEEPS = "does not keep this dim's channels apart"


def tie_pairs(case) -> set:
    """The op's ties as ``(("a", dim), ("op", dim))`` pairs (DimRef is a named tuple)."""
    assert all(t.a_index is None and t.b_index is None for t in case.ties())
    return {(tuple(t.a), tuple(t.b)) for t in case.ties()}


def kept(*dims, out_dims=None) -> set:
    """Ties of input dims ``dims`` to output dims ``out_dims`` (the same dims by default)."""
    return {(("a", d), ("op", o)) for d, o in zip(dims, out_dims or dims)}


# ----- pool


def test_max_pool_ties_batch_and_channels_and_nothing_else():
    case = single_op(nn.MaxPool2d(2), torch.randn(3, 5, 14, 22))
    assert case.rule.name == "pool"
    assert tie_pairs(case) == kept(0, 1)
    assert case.same_channels(("a", 1), ("op", 1)) and case.same_channels(("a", 0), ("op", 0))
    assert case.apart(("a", 1), ("op", 0))


def test_pool_keeps_spatial_dims_whole_even_when_their_size_is_unchanged():
    """A stride-1 pool keeps H and W's sizes, but each output row mixes three input rows."""
    case = single_op(nn.MaxPool2d(3, stride=1, padding=1), torch.randn(1, 5, 7, 11))
    assert case.analysis.table.shapes["op"] == (1, 5, 7, 11)
    for dim in (2, 3):
        assert case.apart(("a", dim), ("op", dim))
        assert any(KEEPS in reason and "MaxPool2d" in reason for reason in case.frozen(("a", dim)))
        assert any(KEEPS in reason for reason in case.frozen(("op", dim)))
    assert case.frozen(("a", 1)) == []


@pytest.mark.parametrize("op, shape, args", [
    (F.avg_pool1d, (3, 5, 11), (2,)),
    (F.adaptive_avg_pool2d, (3, 5, 7, 11), (1,)),
    (F.max_pool3d, (3, 5, 4, 6, 6), (2,)),
    (nn.AdaptiveMaxPool1d(3), (3, 5, 11), ()),
    (nn.LPPool2d(2, 2), (3, 5, 6, 6), ()),
    (nn.AvgPool3d(2), (3, 5, 4, 6, 6), ()),
], ids=["avg_pool1d", "adaptive_avg_pool2d", "max_pool3d", "AdaptiveMaxPool1d", "LPPool2d", "AvgPool3d"])
def test_pools_of_each_rank_tie_the_dims_in_front_of_their_spatial_ones(op, shape, args):
    case = single_op(op, torch.randn(*shape), *args)
    assert case.rule.name == "pool"
    assert tie_pairs(case) == kept(0, 1)
    for dim in range(2, len(shape)):
        assert case.frozen(("op", dim))


def test_pool_of_an_unbatched_input_ties_its_first_dim_as_the_channels():
    """``AvgPool2d`` on (C, H, W): only the leading dim is kept, and it is the channel dim."""
    case = single_op(nn.AvgPool2d(2), torch.randn(7, 6, 6))
    assert tie_pairs(case) == kept(0)
    assert case.frozen(("a", 1)) and case.frozen(("a", 2))


def test_max_pool_returning_indices_keeps_channels_of_values_and_indices():
    """SegNet-style ``MaxPool2d(return_indices=True)``: channel c of both outputs is input channel c."""
    case = single_op(nn.MaxPool2d(2, return_indices=True), torch.randn(1, 5, 8, 8))
    assert case.same_channels(("a", 1), ("op#0", 1))
    assert case.same_channels(("a", 1), ("op#1", 1))


# ----- resize


@pytest.mark.parametrize("op, args, kwargs", [
    (F.interpolate, (), {"scale_factor": 2}),
    (F.interpolate, (), {"size": (3, 13), "mode": "bilinear"}),
    (nn.Upsample(scale_factor=3), (), {}),
    (nn.UpsamplingNearest2d(size=(9, 10)), (), {}),
    (nn.UpsamplingBilinear2d(scale_factor=2), (), {}),
], ids=["interpolate-scale", "interpolate-size", "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"])
def test_resize_ties_batch_and_channels_and_makes_new_spatial_dims(op, args, kwargs):
    case = single_op(op, torch.randn(3, 5, 7, 11), *args, **kwargs)
    assert case.rule.name == "resize"
    assert tie_pairs(case) == kept(0, 1)
    assert case.apart(("a", 2), ("op", 2)) and case.apart(("a", 3), ("op", 3))


def test_resize_of_a_sequence_has_one_spatial_dim_after_the_channels():
    case = single_op(F.interpolate, torch.randn(3, 5, 11), scale_factor=2, mode="linear")
    assert tie_pairs(case) == kept(0, 1)
    assert any(KEEPS in reason for reason in case.frozen(("a", 2)))


def test_resize_to_the_same_size_still_keeps_spatial_dims_whole():
    """An interpolation to the input's own size is not a slot-for-slot copy as far as the rule knows."""
    case = single_op(F.interpolate, torch.randn(3, 5, 7, 11), size=(7, 11), mode="bilinear")
    assert tie_pairs(case) == kept(0, 1)
    assert case.frozen(("a", 2)) and case.frozen(("op", 3))


# ----- pad


@pytest.mark.parametrize("amounts", [(1, 2), (0, 3), (3, 0)], ids=str)
def test_pad_of_the_last_dim_on_either_side_ties_every_other_dim(amounts):
    case = single_op(F.pad, torch.randn(3, 5, 7, 11), amounts)
    assert case.rule.name == "pad"
    assert tie_pairs(case) == kept(0, 1, 2)
    assert case.analysis.table.shapes["op"] == (3, 5, 7, 14)
    assert any(KEEPS in reason for reason in case.frozen(("a", 3)))


def test_pad_with_zero_amounts_for_the_last_dim_ties_it_and_freezes_the_padded_one():
    """``(0, 0, 1, 1)`` pads H (the second-last dim) only: W is copied as it is."""
    case = single_op(F.pad, torch.randn(3, 5, 7, 11), (0, 0, 1, 1))
    assert tie_pairs(case) == kept(0, 1, 3)
    assert case.frozen(("a", 2)) and case.frozen(("op", 2))
    assert case.frozen(("a", 3)) == []


def test_pad_of_the_channel_dim_freezes_channels():
    """Padding channels (five become eight) shifts them: channel c in is channel c + 1 out."""
    case = single_op(F.pad, torch.randn(3, 5, 7, 11), (0, 0, 0, 0, 1, 2), mode="constant", value=0.0)
    assert case.analysis.table.shapes["op"] == (3, 8, 7, 11)
    assert tie_pairs(case) == kept(0, 2, 3)
    assert any(KEEPS in reason and "pad" in reason for reason in case.frozen(("a", 1)))
    assert case.apart(("a", 1), ("op", 1))


def test_negative_pad_crops_and_freezes_that_dim():
    case = single_op(F.pad, torch.randn(3, 5, 7, 11), (-1, -1))
    assert tie_pairs(case) == kept(0, 1, 2)
    assert case.frozen(("a", 3))


# ----- reduction


def test_spatial_mean_with_keepdim_ties_batch_and_channels():
    case = single_op("mean", torch.randn(3, 5, 7, 11), (2, 3), True)
    assert case.rule.name == "reduction"
    assert tie_pairs(case) == kept(0, 1)
    assert case.frozen(("op", 2)) and case.frozen(("op", 3))


@pytest.mark.parametrize("op", ["sum", torch.sum, "amax", torch.amin, torch.mean], ids=str)
def test_reduction_without_keepdim_moves_later_dims_forward(op):
    """``x.sum(2)`` of (3, 5, 7, 11) is (3, 5, 11): input dim 3 becomes output dim 2."""
    case = single_op(op, torch.randn(3, 5, 7, 11), 2)
    assert case.analysis.table.shapes["op"] == (3, 5, 11)
    assert tie_pairs(case) == kept(0, 1, 3, out_dims=(0, 1, 2))
    assert case.apart(("a", 2), ("op", 2))


def test_reduction_with_keepdim_keeps_later_dims_in_place():
    case = single_op("sum", torch.randn(3, 5, 7, 11), dim=2, keepdim=True)
    assert tie_pairs(case) == kept(0, 1, 3)
    assert case.frozen(("op", 2))


def test_reduction_over_a_negative_dim_counts_it_from_the_end():
    case = single_op("amax", torch.randn(3, 5, 7, 11), -1)
    assert tie_pairs(case) == kept(0, 1, 2)
    assert case.frozen(("a", 3))


def test_mean_over_the_channel_dim_freezes_it():
    """Every output value averages all channels: removing one changes every value."""
    case = single_op("mean", torch.randn(3, 5, 7, 11), 1)
    assert tie_pairs(case) == kept(0, 2, 3, out_dims=(0, 1, 2))
    reasons = case.frozen(("a", 1))
    assert reasons and all(KEEPS in reason and "Tensor.mean" in reason for reason in reasons)


def test_reduction_over_every_dim_ties_nothing():
    case = single_op("sum", torch.randn(3, 5, 7, 11))
    assert case.ties() == []
    assert all(case.frozen(("a", dim)) for dim in range(4))


@pytest.mark.parametrize("op, dim", [(torch.amax, ()), ("sum", [])], ids=["amax-()", "sum-[]"])
def test_reduction_over_an_empty_dim_list_reduces_every_dim(op, dim):
    case = single_op(op, torch.randn(3, 5, 7, 11), dim)
    assert case.ties() == []
    assert all(case.frozen(("a", d)) for d in range(4))


# ----- softmax


def test_softmax_over_channels_ties_the_other_dims_and_freezes_channels():
    case = single_op(nn.Softmax(dim=1), torch.randn(3, 5, 7, 11))
    assert case.rule.name == "softmax"
    assert tie_pairs(case) == kept(0, 2, 3)
    reasons = case.frozen(("a", 1))
    assert reasons and all(KEEPS in reason and "Softmax" in reason for reason in reasons)
    assert case.apart(("a", 1), ("op", 1))


@pytest.mark.parametrize("op, args, kwargs", [
    (F.softmax, (), {"dim": -1}),
    (F.log_softmax, (3,), {}),
    ("softmax", (-1,), {}),
    ("log_softmax", (), {"dim": 3}),
    (torch.softmax, (3,), {}),
    (nn.LogSoftmax(dim=-1), (), {}),
], ids=["F.softmax-kw", "F.log_softmax", "softmax", "log_softmax-kw", "torch.softmax", "LogSoftmax"])
def test_softmax_over_the_last_dim_keeps_channels(op, args, kwargs):
    case = single_op(op, torch.randn(3, 5, 7, 11), *args, **kwargs)
    assert tie_pairs(case) == kept(0, 1, 2)
    assert case.frozen(("a", 3)) and case.frozen(("op", 3))


def test_softmax_with_an_implicit_dim_ties_nothing():
    """``nn.Softmax()`` picks its dim from the rank at run time; the rule does not guess it."""
    case = single_op(nn.Softmax(), torch.randn(3, 5, 7, 11))
    assert case.ties() == []
    assert all(case.frozen(("a", dim)) for dim in range(4))


@pytest.mark.parametrize("op, args", [("norm", (2, (2, 3), True)), (torch.linalg.vector_norm, (2, (2, 3), True)),
                                      (torch.ops.aten.linalg_vector_norm.default, (2, [2, 3], True))],
                         ids=["method", "linalg", "aten"])
def test_a_vector_norm_over_spatial_dims_is_a_reduction_that_ties_batch_and_channels(op, args):
    case = single_op(op, torch.randn(2, 5, 3, 3), *args)
    assert case.rule.name == "reduction"
    assert case.same_channels(("a", 1), ("op", 1)) and case.same_channels(("a", 0), ("op", 0))
    assert case.frozen(("a", 2))

