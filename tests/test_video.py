"""Video models (3-D convolutions, MViT, Swin3D, S3D) compress; what cannot be pruned says why."""

import pytest
import torch
import torch.fx
import torch.nn as nn
import torchvision
from helpers import compress_checked, parameter_count, randomize
from torchvision.models.video import mvit
from zoo import video_input, video_model

import fxprune

ALL_MODELS = torchvision.models.list_models(module=torchvision.models.video)


def test_r2plus1d_compresses_exactly():
    model = randomize(torchvision.models.video.r2plus1d_18(num_classes=7))
    x = video_input("r2plus1d_18")
    small, *_ = compress_checked(model, (x,), ratio=0.5)
    assert small(x).shape == (2, 7) and parameter_count(small) < 0.35 * parameter_count(model)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_video_model_compresses(name):
    model = video_model(name)
    x = video_input(name)
    small, analysis, plan, result = compress_checked(model, (x,), ratio=0.5)
    assert small(x).shape == model(x).shape and plan.removed_channels > 0
    assert all(group.reason for group in analysis.frozen)


@torch.fx.wrap
def _window_sizes(window: list, size: list) -> list:
    """Writes into its list argument, as Swin3D's ``_get_window_and_shift_size`` does."""
    for i in range(len(window)):
        window[i] = min(window[i], size[i])
    return window


class MutatesListLiteral(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv3d(3, 7, 3, padding=1), nn.Conv3d(7, 5, 1)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        window = _window_sizes([2, 2, 2], [x.size(2), x.size(3), x.size(4)])
        return self.c2(nn.functional.avg_pool3d(x, window))


def test_functions_that_write_into_list_literals_trace_and_compress():
    model = randomize(MutatesListLiteral())
    compress_checked(model, (torch.randn(2, 3, 4, 6, 6),), ratio=0.5)


def test_swin3d_attention_is_pruned_and_equals_the_masked_original():
    """Stream and head widths of the window attention shrink; only the position tables stay whole."""
    model = randomize(torchvision.models.video.swin3d_t(num_classes=7))
    x = video_input("swin3d_t")
    report = fxprune.analyze(model, x)
    assert not any("shifted_window_attention_3d" in g.frozen_reason for g in report.frozen)
    small, analysis, plan, result = compress_checked(model, (x,), ratio=0.5)
    qkv = "features.0.0.attn.qkv.weight"
    assert small.state_dict()[qkv].shape[0] < model.state_dict()[qkv].shape[0]


def test_swin3d_is_exact_with_layer_norm_replaced_by_a_per_channel_map():
    """LayerNorm mixes pruned channels, so the oracle above checks shapes; without it, exactly."""
    model = randomize(torchvision.models.video.swin3d_t(num_classes=7, norm_layer=ChannelAffine))
    small, analysis, plan, result = compress_checked(model.double(), (video_input("swin3d_t").double(),), ratio=0.5)
    assert result.exact and parameter_count(small) < 0.5 * parameter_count(model)


class ChannelAffine(nn.Module):
    """A per-channel affine map in LayerNorm's place: channels stay apart, so the oracle is exact."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x * self.weight + self.bias


class MViTHelpers(nn.Module):
    """MViT's wrapped helpers around a token mixer: add a heads axis, mix, drop it, add the shortcut."""

    def __init__(self):
        super().__init__()
        self.embed, self.mix, self.head = nn.Linear(3, 7), nn.Linear(7, 7), nn.Linear(7, 5)

    def forward(self, x):
        tokens = self.embed(x.flatten(2).transpose(1, 2))  # (B, N, 7)
        with_heads, rank = mvit._unsqueeze(tokens, 4, 1)
        mixed = mvit._squeeze(torch.relu(self.mix(with_heads)), 4, 1, rank)
        return self.head(mvit._add_shortcut(mixed, tokens, True).mean(1))


def test_mvit_helpers_keep_channels_apart():
    small, analysis, plan, result = compress_checked(randomize(MViTHelpers()), (torch.randn(2, 3, 4, 4),))
    assert result.exact and small.get_submodule("embed").out_features < 7


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mvit_v1_b", "mvit_v2_s"])
def test_mvit_is_exact_with_layer_norm_replaced_by_a_per_channel_map(name):
    """With LayerNorm the oracle only checks shapes; without it, every other rule is checked exactly.

    In double precision: with no normalisation the activations of randomly initialised MViT v2
    grow to ~1e5 and float32 rounding alone moves its output by tens of percent (float64: 4e-10).
    """
    model = video_model(name, norm_layer=ChannelAffine)
    small, analysis, plan, result = compress_checked(model.double(), (video_input(name).double(),), ratio=0.5)
    assert result.exact and parameter_count(small) < 0.5 * parameter_count(model)
