"""Models as users write them: each is pruned exactly (the oracle), or frozen with a reason naming the op."""

import pytest
import torch
import torch.nn as nn
from helpers import compress_checked, parameter_count, randomize
from user_models import EXPECT_FROZEN, USER_MODELS

import fxprune

X = torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("name", sorted(USER_MODELS))
def test_user_model_pruned_equals_masked_original(name):
    model = randomize(USER_MODELS[name]())
    small, analysis, plan, result = compress_checked(model, (X,), ratio=0.5)
    assert result.exact, f"no channel-mixing norm in {name}, the oracle must be exact"
    assert plan.removed_channels > 0 and parameter_count(small) < parameter_count(model)


@pytest.mark.parametrize("name", sorted(EXPECT_FROZEN))
def test_channels_an_op_mixes_stay_with_a_reason_naming_it(name):
    layer, word = EXPECT_FROZEN[name]
    report = fxprune.analyze(randomize(USER_MODELS[name]()), X)
    assert any(word in reason for reason in report.why_frozen(layer)), report.why_frozen(layer)
    assert not any(f"{layer} (out)" in g.layers for g in report.groups)


def _layers_in_groups(model) -> set[str]:
    report = fxprune.analyze(randomize(model), X)
    return {layer for group in report.groups for layer in group.layers}


def test_pixel_shuffle_removes_whole_blocks_of_r_squared_channels():
    small, *_ = compress_checked(randomize(USER_MODELS["interpolate_pixel_shuffle"]()), (X,), ratio=0.5)
    expand = small.get_submodule("expand")
    assert expand.out_channels % 4 == 0 and expand.out_channels < 20


def test_resizing_to_another_tensors_spatial_size_leaves_its_channels_prunable():
    """``interpolate(y, size=skip.shape[-2:])`` reads skip's height and width, not its channels."""
    assert "c1 (out)" in _layers_in_groups(USER_MODELS["interpolate_pixel_shuffle"]())


class SizeReadTwice(nn.Module):
    """The channel count is read twice from one ``x.shape``: once as a value, once as a view size."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 7, 3, padding=1), nn.Conv2d(7, 5, 1)

    def forward(self, x):
        x = self.c1(x)
        shape = x.shape
        scale = shape[1] * 0.1  # a value: pruning c1 would change it
        pooled = x.view(shape[0], shape[1], -1).mean(-1)
        return self.c2(x * scale + pooled[:, :, None, None])


def test_a_size_read_as_a_value_freezes_even_when_also_read_as_a_shape():
    report = fxprune.analyze(SizeReadTwice(), X)
    assert any("used as a value" in reason for reason in report.why_frozen("c1"))
    compress_checked(randomize(SizeReadTwice()), (X,), ratio=0.5, expect_removed=False)  # c1 frozen, c2 an output


def test_shared_module_is_pruned_once_for_both_calls():
    small, *_ = compress_checked(randomize(USER_MODELS["shared_module"]()), (X,), ratio=0.5)
    assert small.get_submodule("shared").in_channels == small.get_submodule("a").out_channels < 7


class PixelUnshuffle(torch.nn.Module):
    """Each input channel spreads over r² output channels: removing it removes all of them."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 5, 1), torch.nn.Conv2d(20, 7, 1)

    def forward(self, x):
        return self.b(torch.nn.functional.pixel_unshuffle(self.a(x), 2))


def test_pixel_unshuffle_prunes_blocks_of_output_channels():
    small, _, plan, result = compress_checked(randomize(PixelUnshuffle()), (torch.randn(2, 3, 8, 8),))
    assert result.exact and plan.removed_channels > 0
    assert small.get_submodule("b").in_channels == 4 * small.get_submodule("a").out_channels
