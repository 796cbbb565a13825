"""round_to: kept channel counts are multiples of it (default 8), and 1 turns rounding off."""

import pytest
import torch
import torchvision
from helpers import randomize
from models import Chain

import fxprune
from fxprune.choose.plan import kept_count


def _pruned_widths(small) -> list[int]:
    return [m.out_channels for m in small.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("ratio", [0.25, 0.3, 0.5, 0.7])
def test_default_rounds_every_kept_count_to_eight(ratio):
    small = fxprune.compress(randomize(torchvision.models.resnet18()), torch.randn(1, 3, 32, 32), ratio=ratio)
    assert all(width % 8 == 0 for width in _pruned_widths(small))
    assert all(len(g.keep) % 8 == 0 for g in small.fxprune_plan.groups)


def test_round_to_one_keeps_exact_ratio():
    small = fxprune.compress(randomize(torchvision.models.resnet18()), torch.randn(1, 3, 32, 32), ratio=0.3,
                             round_to=1)
    assert any(width % 8 for width in _pruned_widths(small))
    assert small.get_submodule("conv1").out_channels == 64 - int(0.3 * 64)


@pytest.mark.parametrize("round_to", [4, 16])
def test_other_multiples(round_to):
    small = fxprune.compress(randomize(torchvision.models.resnet18()), torch.randn(1, 3, 32, 32), ratio=0.6,
                             round_to=round_to)
    assert all(len(g.keep) % round_to == 0 for g in small.fxprune_plan.groups)


def test_groups_smaller_than_the_multiple_are_not_rounded():
    small = fxprune.compress(randomize(Chain()), torch.randn(1, 3, 8, 8), ratio=0.5)
    assert [len(g.keep) for g in small.fxprune_plan.groups] == [kept_count(g.size, 0.5, 1)
                                                                for g in small.fxprune_plan.groups]


def test_rounding_never_keeps_more_than_the_group():
    assert kept_count(12, 0.1, 8) == 12 and kept_count(12, 0.5, 8) == 8 and kept_count(60, 0.5, 8) == 32
