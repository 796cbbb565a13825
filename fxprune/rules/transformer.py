"""Transformer blocks: multi-head attention (ViT), shifted-window attention (Swin, Swin3D), patch merging.

Attention holds three kinds of channels: the residual stream it reads and writes (in-projection
columns, out-projection rows), the query/key width of each head (query row r and key row r meet in
one dot product) and the value width of each head (value row r feeds out-projection column r).
Every head keeps the same width, so index i of one head is tied to index i of every other head;
removing it shrinks the head dimension. The rewrite then installs the attention of
``fxprune.pruned_ops``, which takes those widths (and the original logit scale) explicitly.
"""

from __future__ import annotations

import numpy as np
import torch.nn as nn

from ..graph.tensors import DimRef
from . import pruned_ops
from .base import Freeze, Lazy, NodeView, Tie, register

# torchvision's Swin functions, named so that ``import fxprune`` does not import torchvision's models
SWIN_ATTENTION = Lazy("torchvision.models.swin_transformer:shifted_window_attention")
SWIN3D_ATTENTION = Lazy("torchvision.models.video.swin_transformer:shifted_window_attention_3d")
PATCH_MERGING_PAD = Lazy("torchvision.models.swin_transformer:_patch_merging_pad")


def head_ties(qkv: str, proj: str, num_heads: int, qk_rows: int, v_rows: int, keep_qk: str | None = None):
    """Ties inside stacked [query; key; value] rows of ``qkv`` dim 0 and ``proj`` dim 1.

    Example: 2 heads of width 3 → query rows 0..5, key rows 6..11, value rows 12..17; query row 4
    (head 1, index 1) is tied to query row 1 and key rows 10 and 7, value row 16 to value row 13 and
    projection columns 4 and 1. ``keep_qk``: a reason to keep the query/key rows whole instead.
    """
    q = np.arange(qk_rows)
    v = np.arange(v_rows)
    rows = DimRef(qkv, 0)
    if keep_qk:
        yield Freeze(rows, keep_qk, np.arange(2 * qk_rows))
    else:
        yield Tie(rows, rows, q, qk_rows + q)
        yield Tie(rows, rows, q, q % (qk_rows // num_heads))
    yield Tie(rows, DimRef(proj, 1), 2 * qk_rows + v, v)
    yield Tie(rows, rows, 2 * qk_rows + v, 2 * qk_rows + v % (v_rows // num_heads))


def _stream_ties(view: NodeView, x: str, out: str, qkv: str, proj: str, biases):
    last = len(view.shape(x)) - 1
    yield Tie(DimRef(x, last), DimRef(qkv, 1))
    yield Tie(DimRef(out, last), DimRef(proj, 0))
    for bias, weight in biases:
        if bias is not None:
            yield Tie(DimRef(bias, 0), DimRef(weight, 0))
    for d in range(last):
        if view.shape(x)[d] == view.shape(out)[d]:
            yield Tie(DimRef(x, d), DimRef(out, d))


def _attention_widths(view: NodeView, qkv: str, num_heads: int, proj: str) -> tuple[int, int]:
    v_rows = view.shape(proj)[1]
    return (view.shape(qkv)[0] - v_rows) // 2, v_rows


def _mha_supported(view: NodeView) -> bool:
    mha = view.module
    masks = [view.arg(i, name) for i, name in ((3, "key_padding_mask"), (5, "attn_mask"))]
    same = view.arg(0, "query") is view.arg(1, "key") is view.arg(2, "value")
    plain = isinstance(mha, pruned_ops.PrunedMultiheadAttention) or (
        mha._qkv_same_embed_dim and mha.bias_k is None and not mha.add_zero_attn)
    return same and plain and all(m is None for m in masks) and not view.kwargs_flag("is_causal")


def _replace_mha(view: NodeView, ctx):
    """Install ``PrunedMultiheadAttention`` once any of the attention's widths changed."""
    old = view.module
    weight, proj = old.in_proj_weight, old.out_proj.weight
    if isinstance(old, pruned_ops.PrunedMultiheadAttention):
        old.embed_dim = weight.shape[1]
        old.v_dim = proj.shape[1] // old.num_heads
        old.qk_dim = (weight.shape[0] - proj.shape[1]) // (2 * old.num_heads)
        return
    original = view.shape(view.param("in_proj_weight"))
    if tuple(weight.shape) == original and proj.shape[0] == original[1]:
        return
    heads = old.num_heads
    new = pruned_ops.PrunedMultiheadAttention(
        weight.shape[1], heads, (weight.shape[0] - proj.shape[1]) // (2 * heads), proj.shape[1] // heads,
        scale=(old.embed_dim // heads) ** -0.5, dropout=old.dropout, batch_first=old.batch_first,
        bias=old.in_proj_bias is not None)
    new.in_proj_weight, new.in_proj_bias, new.out_proj = old.in_proj_weight, old.in_proj_bias, old.out_proj
    new.out_proj.in_features, new.out_proj.out_features = proj.shape[1], proj.shape[0]
    owner, _, name = view.node.target.rpartition(".")
    setattr(view.gm.get_submodule(owner), name, new.train(old.training))


@register(nn.MultiheadAttention, pruned_ops.PrunedMultiheadAttention, shrink=_replace_mha)
def multihead_attention(view: NodeView):
    """Self-attention ``mha(x, x, x)`` without masks; anything else stays as it is."""
    if not _mha_supported(view):
        return
    qkv, proj = view.param("in_proj_weight"), view.param("out_proj.weight")
    x, out = view.key_of(view.arg(0, "query")), view.out((0,))
    yield from _stream_ties(view, x, out, qkv, proj,
                            [(view.param("in_proj_bias"), qkv), (view.param("out_proj.bias"), proj)])
    qk_rows, v_rows = _attention_widths(view, qkv, view.module.num_heads, proj)
    yield from head_ties(qkv, proj, view.module.num_heads, qk_rows, v_rows)


# Positional arguments of Swin's and Swin3D's window attention (their replacements add qk_dim, scale).
_WINDOW_ARGS = ["x", "qkv_weight", "proj_weight", "relative_position_bias", "window_size", "num_heads",
                "shift_size", "attention_dropout", "dropout", "qkv_bias", "proj_bias", "logit_scale", "training",
                "qk_dim", "scale"]
_WINDOW_3D_ARGS = [name for name in _WINDOW_ARGS if name != "logit_scale"]


def _window_args(view: NodeView) -> dict:
    target = view.node.target
    three_d = target is pruned_ops.window_attention_3d or SWIN3D_ATTENTION.matches(target)
    named = dict(zip(_WINDOW_3D_ARGS if three_d else _WINDOW_ARGS, view.node.args))
    named.update(view.node.kwargs)
    if "input" in named:  # Swin3D's name for the tokens
        named["x"] = named.pop("input")
    return named


_REPLACEMENTS = {SWIN_ATTENTION: pruned_ops.window_attention, SWIN3D_ATTENTION: pruned_ops.window_attention_3d}


def _replacement(target):
    """The ``pruned_ops`` attention that replaces torchvision's ``target`` (``target`` itself otherwise)."""
    return next((new for old, new in _REPLACEMENTS.items() if old.matches(target)), target)


def _replace_window_attention(view: NodeView, ctx):
    """Call the ``pruned_ops`` window attention with the widths the pruned weights now have."""
    args = _window_args(view)
    heads = args["num_heads"]
    replacement = _replacement(view.node.target)
    if replacement is not view.node.target:  # torchvision's: its logit scale came from the stream width
        args["scale"] = (view.shape(view.key_of(args["x"]))[-1] // heads) ** -0.5
    qkv, proj = view.key_of(args["qkv_weight"]), view.key_of(args["proj_weight"])
    v_rows = ctx.new_size(DimRef(proj, 1))
    args["qk_dim"] = (ctx.new_size(DimRef(qkv, 0)) - v_rows) // (2 * heads)
    view.node.target, view.node.args, view.node.kwargs = replacement, (), args


@register(*_REPLACEMENTS, *_REPLACEMENTS.values(), shrink=_replace_window_attention)
def window_attention(view: NodeView):
    """Swin's and Swin3D's attention: stream and head widths as for ``nn.MultiheadAttention``.

    Swin V2's cosine attention normalises queries and keys over the head width, so that width
    stays whole there (removing part of it would change every logit).
    """
    args = _window_args(view)
    x, qkv, proj = view.key_of(args["x"]), view.key_of(args["qkv_weight"]), view.key_of(args["proj_weight"])
    if None in (x, qkv, proj):
        return
    biases = [(view.key_of(args.get("qkv_bias")), qkv), (view.key_of(args.get("proj_bias")), proj)]
    yield from _stream_ties(view, x, view.out(), qkv, proj, biases)
    qk_rows, v_rows = _attention_widths(view, qkv, args["num_heads"], proj)
    cosine = "cosine attention normalises over the query/key width" if args.get("logit_scale") is not None else None
    yield from head_ties(qkv, proj, args["num_heads"], qk_rows, v_rows, keep_qk=cosine)


@register(PATCH_MERGING_PAD)
def patch_merging(view: NodeView):
    """(…, H, W, C) → (…, H/2, W/2, 4C): output channel ``k·C + c`` is input channel ``c``."""
    x = view.key_of(view.arg(0))
    shape = view.shape(x)
    channels = shape[-1]
    rank = len(shape)
    yield Tie(DimRef(x, rank - 1), DimRef(view.out(), rank - 1), np.tile(np.arange(channels), 4),
              np.arange(4 * channels))
    for d in range(rank - 3):
        yield Tie(DimRef(x, d), DimRef(view.out(), d))

