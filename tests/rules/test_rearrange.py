"""Rearrange rules: ``pixel_shuffle`` and ``pixel_unshuffle`` (channels moved into space and back).

``pixel_shuffle(x, r)``: input channel ``c·r² + i`` (i < r²) belongs to output channel ``c``;
``pixel_unshuffle`` is the inverse. Spatial dims are new and stay whole.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from single_op import SingleOp, single_op

from fxprune.analysis.analyze import analyze_graph
from fxprune.pipeline import traced

RULES = ("pixel_shuffle", "pixel_unshuffle")


def slot_map(case, coarse, fine) -> np.ndarray:
    """For each slot of ``fine``, the slot of ``coarse`` that is one channel with it (-1 where none is)."""
    coarse_labels = case.labels(coarse)
    assert len(set(coarse_labels)) == len(coarse_labels), f"{coarse} holds one channel twice"
    where = {label: slot for slot, label in enumerate(coarse_labels)}
    return np.array([where.get(label, -1) for label in case.labels(fine)])


def traced_case(model, x, node: str) -> SingleOp:
    """``model`` traced and analyzed, with ``node`` as the op whose relations ``SingleOp`` reports."""
    gm = traced(model, (x,))
    return SingleOp(analyze_graph(gm), next(n for n in gm.graph.nodes if n.name == node))


# ----- pixel_shuffle


@pytest.mark.parametrize("op, args, kwargs", [
    (F.pixel_shuffle, (2,), {}),
    (torch.pixel_shuffle, (2,), {}),
    (F.pixel_shuffle, (), {"upscale_factor": 2}),
    (nn.PixelShuffle(2), (), {}),
], ids=["F.pixel_shuffle", "torch.pixel_shuffle", "factor-keyword", "PixelShuffle"])
def test_pixel_shuffle_puts_input_channels_c_r2_to_c_r2_plus_3_into_output_channel_c(op, args, kwargs):
    """(3, 20, 7, 11) → (3, 5, 14, 22): input channels 4c … 4c+3 are output channel c."""
    case = single_op(op, torch.randn(3, 20, 7, 11), *args, **kwargs)
    assert case.rule.name == "pixel_shuffle"
    assert case.analysis.table.shapes["op"] == (3, 5, 14, 22)
    assert np.array_equal(slot_map(case, ("op", 1), ("a", 1)), np.arange(20) // 4)
    assert case.same_channels(("a", 0), ("op", 0))


def test_pixel_shuffle_by_three_groups_nine_input_channels_per_output_channel():
    case = single_op(nn.PixelShuffle(3), torch.randn(1, 45, 2, 3))
    assert np.array_equal(slot_map(case, ("op", 1), ("a", 1)), np.repeat(np.arange(5), 9))
    (tie,) = [t for t in case.ties() if t.a == ("a", 1)]
    assert tie.b == ("op", 1)
    assert np.array_equal(tie.a_index, np.arange(45)) and np.array_equal(tie.b_index, np.arange(45) // 9)


def test_pixel_shuffle_does_not_tie_space_and_keeps_it_whole():
    """Output row ``h·r + i`` is made of input row h and channel offset i: H and W are new dims."""
    case = single_op(F.pixel_shuffle, torch.randn(3, 20, 7, 11), 2)
    assert {(tuple(t.a), tuple(t.b)) for t in case.ties()} == {(("a", 1), ("op", 1)), (("a", 0), ("op", 0))}
    for dim in (2, 3):
        assert case.apart(("a", dim), ("op", dim))
        assert any("does not keep this dim's channels apart" in r for r in case.frozen(("op", dim)))
    assert case.apart(("a", 1), ("op", 2))


def test_pixel_shuffle_of_an_unbatched_input_finds_channels_third_from_the_end():
    case = single_op(F.pixel_shuffle, torch.randn(28, 3, 5), 2)
    assert np.array_equal(slot_map(case, ("op", 0), ("a", 0)), np.arange(28) // 4)


def test_pixel_shuffle_ties_every_dim_in_front_of_the_channels():
    case = single_op(F.pixel_shuffle, torch.randn(3, 2, 20, 5, 7), 2)
    assert case.same_channels(("a", 0), ("op", 0)) and case.same_channels(("a", 1), ("op", 1))
    assert np.array_equal(slot_map(case, ("op", 2), ("a", 2)), np.arange(20) // 4)


class SubPixelUpsampler(nn.Module):
    """The rule module's example: conv(5 → 20) → pixel_shuffle(2) → conv(5 → 11)."""

    def __init__(self):
        super().__init__()
        self.c1, self.shuffle, self.c2 = nn.Conv2d(5, 20, 3, padding=1), nn.PixelShuffle(2), nn.Conv2d(5, 11, 1)

    def forward(self, x):
        return self.c2(self.shuffle(self.c1(x)))


def test_pixel_shuffle_removes_four_conv_rows_with_each_column_of_the_next_conv():
    case = traced_case(SubPixelUpsampler(), torch.randn(1, 5, 7, 7), "shuffle")
    mapping = slot_map(case, ("param:c2.weight", 1), ("param:c1.weight", 0))
    assert np.array_equal(mapping, np.arange(20) // 4)
    (group,) = case.analysis.groups
    assert len(group.channels) == 5


# ----- pixel_unshuffle


@pytest.mark.parametrize("op, args, kwargs", [
    (F.pixel_unshuffle, (2,), {}),
    (torch.pixel_unshuffle, (2,), {}),
    (F.pixel_unshuffle, (), {"downscale_factor": 2}),
    (nn.PixelUnshuffle(2), (), {}),
], ids=["F.pixel_unshuffle", "torch.pixel_unshuffle", "factor-keyword", "PixelUnshuffle"])
def test_pixel_unshuffle_makes_output_channels_4c_to_4c_plus_3_from_input_channel_c(op, args, kwargs):
    """(3, 5, 14, 22) → (3, 20, 7, 11): output channel o comes from input channel o // 4."""
    case = single_op(op, torch.randn(3, 5, 14, 22), *args, **kwargs)
    assert case.rule.name == "pixel_unshuffle"
    assert case.analysis.table.shapes["op"] == (3, 20, 7, 11)
    assert np.array_equal(slot_map(case, ("a", 1), ("op", 1)), np.arange(20) // 4)
    assert case.same_channels(("a", 0), ("op", 0))


def test_pixel_unshuffle_does_not_tie_input_channels_to_the_output_slots_of_the_same_number():
    """Output channel 1 is input channel 0 (its second pixel), not input channel 1."""
    case = single_op(nn.PixelUnshuffle(3), torch.randn(1, 7, 6, 9))
    labels_in, labels_out = case.labels(("a", 1)), case.labels(("op", 1))
    assert labels_out[1] == labels_in[0] and labels_out[1] != labels_in[1]
    assert np.array_equal(slot_map(case, ("a", 1), ("op", 1)), np.arange(63) // 9)
    for dim in (2, 3):
        assert case.frozen(("a", dim)) and case.apart(("a", dim), ("op", dim))


class UnshuffleShuffle(nn.Module):
    def forward(self, x):
        return F.pixel_shuffle(F.pixel_unshuffle(x, 2), 2)


def test_pixel_unshuffle_then_shuffle_gives_each_channel_back_to_itself():
    case = traced_case(UnshuffleShuffle(), torch.randn(1, 7, 6, 10), "pixel_unshuffle")
    assert np.array_equal(slot_map(case, ("x", 1), ("pixel_shuffle", 1)), np.arange(7))
    assert np.array_equal(slot_map(case, ("x", 1), ("pixel_unshuffle", 1)), np.arange(28) // 4)
