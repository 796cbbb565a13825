"""Attention: the replacements compute what the originals do, and pruned attention equals the masked one."""

import pytest
import torch
import torch.nn as nn
from helpers import compress_checked, randomize
from torchvision.models.swin_transformer import (
    ShiftedWindowAttention,
    ShiftedWindowAttentionV2,
    shifted_window_attention,
)
from torchvision.models.video.swin_transformer import shifted_window_attention_3d

from fxprune.rules.pruned_ops import PrunedMultiheadAttention, window_attention, window_attention_3d


@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("shift", [[0, 0], [3, 2]])
def test_window_attention_matches_torchvision(cosine, shift):
    torch.manual_seed(0)
    channels, heads = 12, 3
    x = torch.randn(2, 9, 11, channels)
    qkv, proj = torch.randn(3 * channels, channels), torch.randn(channels, channels)
    qkv_bias, proj_bias, bias = torch.randn(3 * channels), torch.randn(channels), torch.randn(1, heads, 25, 25)
    logit_scale = torch.rand(heads, 1, 1) if cosine else None
    args = (x, qkv, proj, bias, [5, 5], heads, shift)
    kwargs = dict(qkv_bias=qkv_bias, proj_bias=proj_bias, logit_scale=logit_scale, training=False)
    want = shifted_window_attention(*args, **kwargs)
    got = window_attention(*args, **kwargs, qk_dim=channels // heads, scale=(channels // heads) ** -0.5)
    assert torch.allclose(want, got, atol=1e-5)


@pytest.mark.parametrize("shift", [[0, 0, 0], [1, 2, 2], [0, 2, 1]])
def test_window_attention_3d_matches_torchvision(shift):
    torch.manual_seed(0)
    channels, heads, window = 12, 3, [2, 4, 4]
    x = torch.randn(2, 3, 7, 9, channels)
    qkv, proj = torch.randn(3 * channels, channels), torch.randn(channels, channels)
    qkv_bias, proj_bias, bias = torch.randn(3 * channels), torch.randn(channels), torch.randn(1, heads, 32, 32)
    args = (x, qkv, proj, bias, window, heads, shift)
    kwargs = dict(qkv_bias=qkv_bias, proj_bias=proj_bias, training=False)
    want = shifted_window_attention_3d(*args, **kwargs)
    got = window_attention_3d(*args, **kwargs, qk_dim=channels // heads, scale=(channels // heads) ** -0.5)
    assert torch.allclose(want, got, atol=1e-5)


def test_pruned_multihead_attention_matches_torch():
    torch.manual_seed(0)
    for batch_first in (True, False):
        reference = nn.MultiheadAttention(12, 3, batch_first=batch_first).eval()
        pruned = PrunedMultiheadAttention(12, 3, 4, 4, 4**-0.5, batch_first=batch_first).eval()
        pruned.load_state_dict(reference.state_dict())
        x = torch.randn(2, 5, 12)
        assert torch.allclose(reference(x, x, x, need_weights=False)[0], pruned(x, x, x)[0], atol=1e-6)


class TinyViT(nn.Module):
    """Embedding, one self-attention block and an MLP, with no LayerNorm: pruning is exact."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(7, 18)
        self.attention = nn.MultiheadAttention(18, 3, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(18, 29), nn.GELU(), nn.Linear(29, 18))
        self.head = nn.Linear(18, 5)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.attention(x, x, x, need_weights=False)[0]
        return self.head((x + self.mlp(x)).mean(1))


class TinySwin(nn.Module):
    def __init__(self, block=ShiftedWindowAttention):
        super().__init__()
        self.embed = nn.Linear(3, 24)
        self.attention = block(24, [4, 4], [2, 2], num_heads=4)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        x = self.embed(x)
        return self.head((x + self.attention(x)).mean((1, 2)))


def test_vit_style_attention_prunes_stream_and_heads_exactly():
    model = randomize(TinyViT())
    small, analysis, plan, result = compress_checked(model, (torch.randn(2, 6, 7),), ratio=0.5)
    attention = small.get_submodule("attention")
    assert isinstance(attention, PrunedMultiheadAttention)
    assert attention.embed_dim < 18 and attention.qk_dim < 6 and attention.v_dim < 6
    assert result.exact


@pytest.mark.parametrize("block", [ShiftedWindowAttention, ShiftedWindowAttentionV2])
def test_swin_style_attention_prunes_exactly(block):
    model = randomize(TinySwin(block))
    small, analysis, plan, result = compress_checked(model, (torch.randn(2, 8, 8, 3),), ratio=0.5)
    assert result.exact and plan.removed_channels > 0
    assert small.get_parameter("attention.qkv.weight").shape[1] < 24
