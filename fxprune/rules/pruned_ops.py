"""Attention that states its widths: what the rewrite installs where torchvision's attention derives
its head size from the width of the residual stream.

``nn.MultiheadAttention`` and torchvision's ``shifted_window_attention`` (and its 3-D twin) compute
``head_dim = embed_dim // num_heads`` and scale the logits by ``head_dim ** -0.5``. Once the stream
and the heads are pruned separately that no longer holds, so the replacements take the query/key
width and value width per head, and the original logit scale, explicitly. With nothing pruned they
compute exactly what the originals compute.
"""

from __future__ import annotations

import math

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F


def _heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(batch, length, heads·width) → (batch, heads, length, width)."""
    batch, length, _ = t.shape
    return t.reshape(batch, length, num_heads, -1).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    batch, heads, length, width = t.shape
    return t.transpose(1, 2).reshape(batch, length, heads * width)


class PrunedMultiheadAttention(nn.Module):
    """Self-attention with ``num_heads`` heads of ``qk_dim`` query/key and ``v_dim`` value channels.

    Holds the same parameters as ``nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``,
    ``out_proj``) so state dicts keep their keys. Masks are not supported (the rule does not
    replace attention that is called with one).
    """

    def __init__(self, embed_dim: int, num_heads: int, qk_dim: int, v_dim: int, scale: float,
                 dropout: float = 0.0, batch_first: bool = False, bias: bool = True):
        super().__init__()
        self.embed_dim, self.num_heads, self.qk_dim, self.v_dim = embed_dim, num_heads, qk_dim, v_dim
        self.scale, self.dropout, self.batch_first = scale, dropout, batch_first
        rows = num_heads * (2 * qk_dim + v_dim)
        self.in_proj_weight = nn.Parameter(torch.empty(rows, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(rows)) if bias else None
        self.out_proj = nn.Linear(num_heads * v_dim, embed_dim, bias=bias)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        qk_rows = self.num_heads * self.qk_dim
        sizes = [qk_rows, qk_rows, self.num_heads * self.v_dim]
        weights = self.in_proj_weight.split(sizes)
        biases = self.in_proj_bias.split(sizes) if self.in_proj_bias is not None else (None,) * 3
        q, k, v = (_heads(F.linear(t, w, b), self.num_heads) for t, w, b in zip((query, key, value), weights, biases))
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        attn = F.dropout(attn, self.dropout, self.training)
        out = self.out_proj(_merge_heads(attn @ v))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _band(size: int, window: int, shift: int, device) -> torch.Tensor:
    """Along one padded axis, which of the three shifted-window bands each position falls in.

    Bands are [0, size − window), [size − window, size − shift) and [size − shift, size), as torchvision
    slices them; with no shift along the axis, its last slice ``[-0:]`` covers it all: one band.
    """
    index = torch.arange(size, device=device)
    if shift == 0:
        return torch.zeros_like(index)
    return (index >= size - window).long() + (index >= size - shift).long()


def _window_regions(padded: list[int], window: list[int], shift: list[int], device) -> torch.Tensor:
    """Which shifted-window region (a band per axis) each padded position falls in, as labels over
    the padded axes: (H, W) for Swin, (T, H, W) for Swin3D."""
    labels = torch.zeros((), dtype=torch.long, device=device)
    for size, win, sh in zip(padded, window, shift):
        labels = labels[..., None] * 3 + _band(size, win, sh, device)
    return labels


def _mask_across_regions(attn: torch.Tensor, windowed_regions: torch.Tensor, batch: int) -> torch.Tensor:
    """Add −100 to the logits between positions of one window that came from different regions
    (``windowed_regions``: window × position labels), as torchvision's shifted-window mask does."""
    mask = (windowed_regions[:, None, :] != windowed_regions[:, :, None]).to(attn.dtype) * -100.0
    heads, length = attn.shape[1], attn.shape[-1]
    return (attn.view(batch, -1, heads, length, length) + mask[None, :, None]).view(-1, heads, length, length)


def _partition(x: torch.Tensor, window: list[int]) -> torch.Tensor:
    """(B, H, W, C) → (B·windows, window area, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window[0], window[0], w // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def _unpartition(x: torch.Tensor, window: list[int], b: int, h: int, w: int) -> torch.Tensor:
    x = x.view(b, h // window[0], w // window[1], window[0], window[1], x.shape[-1])
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, -1)


def window_attention(x, qkv_weight, proj_weight, relative_position_bias, window_size, num_heads, shift_size,
                     attention_dropout=0.0, dropout=0.0, qkv_bias=None, proj_bias=None, logit_scale=None,
                     training=True, qk_dim=None, scale=None):
    """Shifted-window self-attention over (B, H, W, C) with explicit per-head query/key width and scale."""
    b, h, w, _ = x.shape
    pad_h, pad_w = (-h) % window_size[0], (-w) % window_size[1]
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    full_h, full_w = h + pad_h, w + pad_w
    shift = [0 if window_size[0] >= full_h else shift_size[0], 0 if window_size[1] >= full_w else shift_size[1]]
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    windows = _partition(x, window_size)
    qk_rows = num_heads * qk_dim
    sizes = [qk_rows, qk_rows, qkv_weight.shape[0] - 2 * qk_rows]
    if logit_scale is not None and qkv_bias is not None:  # cosine attention keeps no key bias
        qkv_bias = torch.cat([qkv_bias[:qk_rows], torch.zeros_like(qkv_bias[qk_rows:2 * qk_rows]),
                              qkv_bias[2 * qk_rows:]])
    q, k, v = (_heads(t, num_heads) for t in F.linear(windows, qkv_weight, qkv_bias).split(sizes, dim=-1))
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * scale) @ k.transpose(-2, -1)
    attn = attn + relative_position_bias
    if sum(shift) > 0:
        regions = _window_regions([full_h, full_w], window_size, shift, x.device)
        attn = _mask_across_regions(attn, _partition(regions[None, ..., None], window_size).squeeze(-1), b)
    attn = F.dropout(F.softmax(attn, dim=-1), p=attention_dropout, training=training)
    out = F.dropout(F.linear(_merge_heads(attn @ v), proj_weight, proj_bias), p=dropout, training=training)
    out = _unpartition(out, window_size, b, full_h, full_w)
    if sum(shift) > 0:
        out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
    return out[:, :h, :w, :].contiguous()


torch.fx.wrap("window_attention")


def _partition_3d(x: torch.Tensor, window: list[int]) -> torch.Tensor:
    """(B, T, H, W, C) → (B·windows, window volume, C)."""
    b, t, h, w, c = x.shape
    x = x.view(b, t // window[0], window[0], h // window[1], window[1], w // window[2], window[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window[0] * window[1] * window[2], c)


def _unpartition_3d(x: torch.Tensor, window: list[int], b: int, t: int, h: int, w: int) -> torch.Tensor:
    x = x.view(b, t // window[0], h // window[1], w // window[2], window[0], window[1], window[2], x.shape[-1])
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, t, h, w, -1)


def window_attention_3d(x, qkv_weight, proj_weight, relative_position_bias, window_size, num_heads, shift_size,
                        attention_dropout=0.0, dropout=0.0, qkv_bias=None, proj_bias=None, training=True,
                        qk_dim=None, scale=None):
    """Swin3D's shifted-window self-attention over (B, T, H, W, C), with explicit per-head query/key
    width and logit scale (torchvision's ``shifted_window_attention_3d`` derives both from C)."""
    b, t, h, w, _ = x.shape
    pads = [(-size) % win for size, win in zip((t, h, w), window_size)]
    x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
    padded = [t + pads[0], h + pads[1], w + pads[2]]
    shifted = sum(shift_size) > 0
    if shifted:
        x = torch.roll(x, shifts=[-s for s in shift_size], dims=(1, 2, 3))
    windows = _partition_3d(x, window_size)
    qk_rows = num_heads * qk_dim
    sizes = [qk_rows, qk_rows, qkv_weight.shape[0] - 2 * qk_rows]
    q, k, v = (_heads(part, num_heads) for part in F.linear(windows, qkv_weight, qkv_bias).split(sizes, dim=-1))
    attn = (q * scale) @ k.transpose(-2, -1) + relative_position_bias
    if shifted:
        regions = _window_regions(padded, window_size, shift_size, x.device)
        attn = _mask_across_regions(attn, _partition_3d(regions[None, ..., None], window_size).squeeze(-1), b)
    attn = F.dropout(F.softmax(attn, dim=-1), p=attention_dropout, training=training)
    out = F.dropout(F.linear(_merge_heads(attn @ v), proj_weight, proj_bias), p=dropout, training=training)
    out = _unpartition_3d(out, window_size, b, *padded)
    if shifted:
        out = torch.roll(out, shifts=list(shift_size), dims=(1, 2, 3))
    return out[:, :t, :h, :w].contiguous()


torch.fx.wrap("window_attention_3d")
