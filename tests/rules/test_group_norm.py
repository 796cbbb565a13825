"""GroupNorm: channels tied group-wise (every group loses the same in-group indices), statistics mixed."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import compress_checked, randomize
from single_op import single_op

import fxprune

RULES = ("group_norm_module", "group_norm_function")


def test_group_norm_ties_the_same_index_of_every_group_and_its_vectors():
    case = single_op(nn.GroupNorm(3, 15), torch.randn(2, 15, 4, 4))  # 3 groups of 5
    for i in range(5):
        assert case.same_channels(("op", 1), ("op", 1), [i], [i + 5]) and case.same_channels(("op", 1), ("op", 1),
                                                                                              [i], [i + 10])
    assert case.same_channels(("a", 1), ("op", 1)) and case.same_channels(("param:op.weight", 0), ("op", 1))
    assert not case.same_channels(("op", 1), ("op", 1), [0], [1])  # two indices of one group stay apart
    assert case.rule.normalizes is not None


def test_group_norm_function_ties_like_the_module():
    case = single_op(F.group_norm, torch.randn(1, 6, 2), 3)  # 3 groups of 2
    assert case.same_channels(("op", 1), ("op", 1), [0, 1], [2, 3]) and case.same_channels(("op", 1), ("op", 1),
                                                                                            [0, 1], [4, 5])
    assert not case.same_channels(("op", 1), ("op", 1), [0], [1])
    assert case.frozen(("a", 1)) == []


class ConvGroupNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.norm, self.conv2 = nn.Conv2d(3, 15, 3, padding=1), nn.GroupNorm(3, 15), nn.Conv2d(15, 7, 1)

    def forward(self, x):
        return self.conv2(torch.relu(self.norm(self.conv1(x))))


def test_a_conv_group_norm_block_prunes_evenly_and_is_listed_as_mixing():
    x = torch.randn(2, 3, 8, 8)
    small, analysis, plan, result = compress_checked(randomize(ConvGroupNorm()), (x,), ratio=0.4)
    assert small.norm.num_channels == small.conv1.out_channels == 9 and small.norm.num_groups == 3
    assert analysis.mixing_norms == ["norm"] and not result.exact
    assert small(x).shape == (2, 7, 8, 8)
    assert "mix pruned channels" in str(fxprune.analyze(ConvGroupNorm(), x))
