"""Layers with weights: convolutions, linear layers and embeddings, as modules and functions.

A conv or linear layer is where channels begin and end: its output channel ``j`` is weight row
``j`` (and bias ``j``); its input channel ``i`` is read by weight column ``i``. Ties to the weight
make the analysis see both sides, so removing a channel slices both. Normalisations are in ``norms``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graph.tensors import DimRef
from .base import NodeView, Tie, register, same_dims


def _ungrouped(conv: nn.Conv2d) -> bool:
    return conv.groups == 1


def _always(module: nn.Module) -> bool:
    return True


def conv_ties(view: NodeView, x: str, y: str, weight: str, bias: str | None, groups: int):
    """Ties of ``y = conv(x, weight, bias, groups=groups)``.

    * ``groups == 1``: x channel i = weight column i; y channel j = weight row j = bias j.
    * depthwise (one input channel per group): x channel i = y channels of group i.
    * grouped (ResNeXt): x channel ``g*n + i`` = weight column ``i`` for every group ``g``, and the
      y channels with the same in-group index are tied, so every group loses the same channels.
    """
    spatial = len(view.shape(weight)) - 2
    channel = len(view.shape(x)) - spatial - 1
    in_channels, out_channels = view.shape(x)[channel], view.shape(weight)[0]
    in_per_group = view.shape(weight)[1]
    yield Tie(DimRef(y, channel), DimRef(weight, 0))
    if bias is not None:
        yield Tie(DimRef(bias, 0), DimRef(weight, 0))
    if channel == 1:
        yield Tie(DimRef(x, 0), DimRef(y, 0))
    if groups == 1:
        yield Tie(DimRef(x, channel), DimRef(weight, 1))
    elif in_per_group == 1:
        per_group = out_channels // in_channels
        yield Tie(DimRef(x, channel), DimRef(y, channel), np.repeat(np.arange(in_channels), per_group),
                  np.arange(out_channels))
    else:
        out_per_group = out_channels // groups
        yield Tie(DimRef(x, channel), DimRef(weight, 1), np.arange(in_channels), np.arange(in_channels) % in_per_group)
        yield Tie(DimRef(y, channel), DimRef(y, channel), np.arange(out_channels),
                  np.arange(out_channels) % out_per_group)


def _shrink_conv(view: NodeView, ctx):
    conv = view.module
    x = view.tensor_args()[0]
    channel = len(view.shape(x)) - conv.weight.dim() + 1
    new_in = ctx.new_size(DimRef(x, channel))
    conv.out_channels = conv.weight.shape[0]
    conv.groups = new_in // conv.weight.shape[1]
    conv.in_channels = new_in


@register(nn.Conv2d, shrink=_shrink_conv, latency="producer", refit=_ungrouped)
@register(nn.Conv1d, nn.Conv3d, shrink=_shrink_conv, latency="producer")
def conv_module(view: NodeView):
    conv = view.module
    bias = view.param("bias") if conv.bias is not None else None
    return conv_ties(view, view.tensor_args()[0], view.out(), view.param("weight"), bias, conv.groups)


def _shrink_conv_function(view: NodeView, ctx):
    """A grouped or depthwise ``F.conv2d(x, w, b, stride, padding, dilation, groups)`` keeps as many input
    channels per group as its sliced weight: ``groups`` becomes the new input width over that."""
    x, weight, groups = view.key_of(view.arg(0, "input")), view.key_of(view.arg(1, "weight")), view.arg(6, "groups", 1)
    if x is None or weight is None or groups == 1:
        return
    channel = len(view.shape(x)) - len(view.shape(weight)) + 1
    new_groups = ctx.new_size(DimRef(x, channel)) // ctx.new_shape(weight)[1]
    if len(view.node.args) > 6:
        view.node.update_arg(6, new_groups)
    else:
        view.node.update_kwarg("groups", new_groups)


@register(F.conv1d, F.conv2d, F.conv3d, shrink=_shrink_conv_function, latency="producer")
def conv_function(view: NodeView):
    x, weight, bias = view.arg(0, "input"), view.arg(1, "weight"), view.arg(2, "bias")
    groups = view.arg(6, "groups", 1)
    keys = view.key_of(x), view.key_of(weight)
    if None in keys or not isinstance(groups, int):
        return []
    return conv_ties(view, keys[0], view.out(), keys[1], view.key_of(bias), groups)


def _shrink_conv_transpose(view: NodeView, ctx):
    conv = view.module
    conv.in_channels = conv.weight.shape[0]
    conv.out_channels = conv.weight.shape[1]


@register(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, shrink=_shrink_conv_transpose,
          latency="producer", weight_layout=("in", "out"))
def conv_transpose_module(view: NodeView):
    """Transposed conv: weight is (in, out, k...); only ungrouped ones are pruned."""
    conv = view.module
    if conv.groups != 1:
        return
    x, y, weight = view.tensor_args()[0], view.out(), view.param("weight")
    channel = len(view.shape(x)) - (conv.weight.dim() - 2) - 1  # 0 for an unbatched input
    yield Tie(DimRef(x, channel), DimRef(weight, 0))
    yield Tie(DimRef(y, channel), DimRef(weight, 1))
    if channel == 1:
        yield Tie(DimRef(x, 0), DimRef(y, 0))
    if conv.bias is not None:
        yield Tie(DimRef(view.param("bias"), 0), DimRef(y, channel))


def linear_ties(view: NodeView, x: str, y: str, weight: str, bias: str | None):
    """``y = x @ weight.T + bias``: x's last dim = weight columns; y's last dim = weight rows = bias."""
    last = len(view.shape(x)) - 1
    yield Tie(DimRef(x, last), DimRef(weight, 1))
    yield Tie(DimRef(y, last), DimRef(weight, 0))
    if bias is not None:
        yield Tie(DimRef(bias, 0), DimRef(weight, 0))
    yield from same_dims(x, y, view, skip=[last])


def _shrink_linear(view: NodeView, ctx):
    view.module.in_features = view.module.weight.shape[1]
    view.module.out_features = view.module.weight.shape[0]


@register(nn.Linear, shrink=_shrink_linear, latency="producer", refit=_always)
def linear_module(view: NodeView):
    bias = view.param("bias") if view.module.bias is not None else None
    return linear_ties(view, view.tensor_args()[0], view.out(), view.param("weight"), bias)


@register(F.linear, latency="producer")
def linear_function(view: NodeView):
    x, weight = view.key_of(view.arg(0, "input")), view.key_of(view.arg(1, "weight"))
    if x is None or weight is None:
        return []
    return linear_ties(view, x, view.out(), weight, view.key_of(view.arg(2, "bias")))


def _shrink_embedding(view: NodeView, ctx):
    view.module.embedding_dim = view.module.weight.shape[1]


@register(nn.Embedding, shrink=_shrink_embedding)
def embedding_module(view: NodeView):
    """``y = weight[ids]``: y's last dim is the weight's columns, its other dims are the ids' dims.

    The rows (one per id) stay. With ``max_norm`` each looked-up row is rescaled by its norm over
    all columns, which mixes them, so the columns stay too.
    """
    ids, y = view.tensor_args()[0], view.out()
    ties = same_dims(ids, y, view)
    if view.module.max_norm is None:
        ties.append(Tie(DimRef(y, len(view.shape(y)) - 1), DimRef(view.param("weight"), 1)))
    return ties


@register(torch.ops.aten.addmm.default, latency="producer")
def addmm_aten(view: NodeView):
    """``addmm(bias, x, w) = bias + x @ w`` with x (M, K), w (K, N): torch.export's linear layer on 2-D
    inputs (Hugging Face's ``Conv1D`` stores w transposed): K is x's columns and w's rows, N w's columns,
    the output's columns and the bias."""
    bias, x, weight = (view.key_of(view.arg(i)) for i in range(3))
    if x is None or weight is None or len(view.shape(x)) != 2 or len(view.shape(weight)) != 2:
        return
    y = view.out()
    yield Tie(DimRef(x, 1), DimRef(weight, 0))
    yield Tie(DimRef(weight, 1), DimRef(y, 1))
    yield Tie(DimRef(x, 0), DimRef(y, 0))
    if bias is not None and view.arg(3, "beta", 1) != 0:
        shape = view.shape(bias)
        if shape and shape[-1] == view.shape(y)[1]:
            yield Tie(DimRef(bias, len(shape) - 1), DimRef(y, 1))
        if len(shape) == 2 and shape[0] == view.shape(y)[0]:
            yield Tie(DimRef(bias, 0), DimRef(y, 0))


@register(torch.ops.aten.embedding.default)
def embedding_aten(view: NodeView):
    """``aten.embedding.default(weight, ids, padding_idx, ...)`` (torch.export's ``nn.Embedding`` and
    ``F.embedding`` without ``max_norm``): the output's last dim is the weight's columns, its other dims
    the ids' dims; the rows (one per id) and the ids' values stay."""
    weight, ids = view.key_of(view.arg(0, "weight")), view.key_of(view.arg(1, "indices"))
    if weight is None or ids is None:
        return []
    y = view.out()
    return [*same_dims(ids, y, view), Tie(DimRef(y, len(view.shape(y)) - 1), DimRef(weight, 1))]
