"""Layers with weights: convolutions, linear layers and normalisations, as modules and functions.

A conv or linear layer is where channels begin and end: its output channel ``j`` is weight row
``j`` (and bias ``j``); its input channel ``i`` is read by weight column ``i``. Ties to the weight
make the analysis see both sides, so removing a channel slices both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graph.tensors import DimRef
from .base import NodeView, Tie, register, same_dims

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _ungrouped(conv: nn.Conv2d) -> bool:
    return conv.groups == 1


def _always(module: nn.Module) -> bool:
    return True


def _check_parameter_shapes(module: nn.Module, names: tuple[str, ...], expected: tuple) -> None:
    for name in names:
        tensor = getattr(module, name, None)
        if tensor is not None and tuple(tensor.shape) != tuple(expected):
            raise RuntimeError(f"{name} of {type(module).__name__} has shape {tuple(tensor.shape)}, "
                               f"expected {tuple(expected)} from its input")


def _check_batch_norm(module: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> None:
    """The checks BatchNorm's kernel makes on shapes: input rank and one statistic per channel."""
    module._check_input_dim(x)
    _check_parameter_shapes(module, ("weight", "bias", "running_mean", "running_var"), (x.shape[1],))
    if module.training and x.numel() == x.shape[1]:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")


def _check_layer_norm(module: nn.LayerNorm | nn.RMSNorm, x: torch.Tensor) -> None:
    shape = tuple(module.normalized_shape)
    if tuple(x.shape[x.dim() - len(shape):]) != shape:
        raise RuntimeError(f"{type(module).__name__} normalizes over {shape}, input has shape {tuple(x.shape)}")
    _check_parameter_shapes(module, ("weight", "bias"), shape)


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


def norm_ties(view: NodeView, x: str, y: str, params: list[str | None], channel: int):
    """Per-channel normalisation: channel c of x = channel c of y = entry c of every parameter."""
    yield from same_dims(x, y, view)
    for key in params:
        if key is not None:
            yield Tie(DimRef(key, 0), DimRef(y, channel))


def _norm_channel(view: NodeView) -> int:
    """Dim 1, or 0 for an unbatched input to an InstanceNorm (``(C, L)`` to ``InstanceNorm1d``)."""
    norm, x = view.module, view.tensor_args()[0]
    instance = isinstance(norm, nn.modules.instancenorm._InstanceNorm)
    return 0 if instance and len(view.shape(x)) == norm._get_no_batch_dim() else 1


def _shrink_batch_norm(view: NodeView, ctx):
    norm = view.module
    x = view.tensor_args()[0]
    norm.num_features = ctx.new_size(DimRef(x, _norm_channel(view)))


@register(*BATCH_NORMS, shrink=_shrink_batch_norm, latency="fusable", same_shape=_check_batch_norm)
@register(nn.SyncBatchNorm, shrink=_shrink_batch_norm, latency="fusable")
@register(*INSTANCE_NORMS, shrink=_shrink_batch_norm)
def batch_norm_module(view: NodeView):
    names = ("weight", "bias", "running_mean", "running_var")
    params = [view.param(n) for n in names if getattr(view.module, n, None) is not None]
    return norm_ties(view, view.tensor_args()[0], view.out(), params, channel=_norm_channel(view))


def _batch_statistics_dims(view: NodeView) -> list[int]:
    """With ``training=True`` (argument 5 of both forms) the norm computes its statistics from the input,
    over every dim but the channel one: removing a slot there changes them (a weight standardised by
    ``F.batch_norm(w.reshape(1, out, -1), training=True)``, as NF-Nets' ScaledStdConv2d does, mixes the
    conv's input channels). With running statistics it mixes nothing."""
    if view.arg(5, "training", False) is not True:
        return []
    rank = len(view.shape(view.out()))
    return [d for d in range(rank) if d != 1]


@register(F.batch_norm, latency="fusable", normalizes=_batch_statistics_dims)
def batch_norm_function(view: NodeView):
    x = view.key_of(view.arg(0, "input"))
    if x is None:
        return []
    names = [(1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")]
    params = [view.key_of(view.arg(i, n)) for i, n in names]
    return norm_ties(view, x, view.out(), params, channel=1)


@register(torch.ops.aten.batch_norm.default, latency="fusable", normalizes=_batch_statistics_dims)
def batch_norm_aten(view: NodeView):
    """``aten.batch_norm(x, weight, bias, running_mean, running_var, training, ...)``: ``F.batch_norm``'s
    vectors in another order."""
    x = view.key_of(view.arg(0))
    if x is None:
        return []
    params = [view.key_of(view.arg(i)) for i in (1, 2, 3, 4)]
    return norm_ties(view, x, view.out(), params, channel=1)


def layer_norm_ties(view: NodeView, x: str, y: str, weight: str | None, bias: str | None, normalized: int):
    """LayerNorm over the last ``normalized`` dims: those dims are tied to weight and bias.

    Removing a channel changes the mean and variance the norm computes, so the pruned model is
    close to, not equal to, the masked one (``normalizes``; docs/DESIGN.md, the oracle).
    """
    rank = len(view.shape(x))
    yield from same_dims(x, y, view)
    for key in (weight, bias):
        if key is None:
            continue
        for i in range(normalized):
            yield Tie(DimRef(key, i), DimRef(y, rank - normalized + i))


def _shrink_layer_norm(view: NodeView, ctx):
    norm = view.module
    x = view.tensor_args()[0]
    k = len(norm.normalized_shape)
    norm.normalized_shape = tuple(ctx.new_shape(x)[-k:])


def _layer_norm_dims(view: NodeView) -> list[int]:
    """The output dims LayerNorm's statistics span: its last ``len(normalized_shape)``."""
    shape = view.module.normalized_shape if view.node.op == "call_module" else view.arg(1, "normalized_shape")
    count = len(shape) if isinstance(shape, (list, tuple)) else 0  # sizes computed at run time: couple froze it
    rank = len(view.shape(view.out()))
    return list(range(rank - count, rank))


@register(nn.LayerNorm, shrink=_shrink_layer_norm, normalizes=_layer_norm_dims, same_shape=_check_layer_norm)
def layer_norm_module(view: NodeView):
    norm = view.module
    weight = view.param("weight") if norm.weight is not None else None
    bias = view.param("bias") if getattr(norm, "bias", None) is not None else None
    return layer_norm_ties(view, view.tensor_args()[0], view.out(), weight, bias, len(norm.normalized_shape))


def _shrink_layer_norm_function(view: NodeView, ctx):
    x = view.key_of(view.arg(0))
    shape = view.arg(1, "normalized_shape")
    new = list(ctx.new_shape(x)[-len(shape):])
    view.node.update_arg(1, new) if len(view.node.args) > 1 else view.node.update_kwarg("normalized_shape", new)


@register(F.layer_norm, shrink=_shrink_layer_norm_function, normalizes=_layer_norm_dims)
def layer_norm_function(view: NodeView):
    return _norm_function_ties(view, with_bias=True)


def _norm_function_ties(view: NodeView, with_bias: bool):
    """``F.layer_norm(x, shape, weight, bias)`` or ``F.rms_norm(x, shape, weight)``, with a literal shape."""
    x = view.key_of(view.arg(0, "input"))
    shape = view.arg(1, "normalized_shape")
    if x is None or not isinstance(shape, (list, tuple)) or not all(isinstance(s, int) for s in shape):
        return []
    weight, bias = view.key_of(view.arg(2, "weight")), view.key_of(view.arg(3, "bias")) if with_bias else None
    return layer_norm_ties(view, x, view.out(), weight, bias, len(shape))


@register(nn.RMSNorm, shrink=_shrink_layer_norm, normalizes=_layer_norm_dims, same_shape=_check_layer_norm)
def rms_norm_module(view: NodeView):
    """RMSNorm: LayerNorm without the mean and the bias; its weight is tied to the normalised dims."""
    norm = view.module
    weight = view.param("weight") if norm.weight is not None else None
    return layer_norm_ties(view, view.tensor_args()[0], view.out(), weight, None, len(norm.normalized_shape))


@register(F.rms_norm, shrink=_shrink_layer_norm_function, normalizes=_layer_norm_dims)
def rms_norm_function(view: NodeView):
    return _norm_function_ties(view, with_bias=False)


def group_norm_ties(view: NodeView, x: str, y: str, weight: str | None, bias: str | None, groups: int):
    """GroupNorm: channels split into ``groups`` equal runs, each normalised over itself.

    A channel may go only with the channels at the same index in every other group, so that the
    groups stay equal (as in a grouped convolution): channel ``g·n + i`` is tied to channel ``i``.
    The statistics of each group then lose those channels, so the pruned model is close to, not
    equal to, the masked one (``normalizes``).
    """
    channels = view.shape(x)[1]
    if groups < 1 or channels % groups:
        return
    yield from same_dims(x, y, view)
    per_group = channels // groups
    yield Tie(DimRef(y, 1), DimRef(y, 1), np.arange(channels), np.arange(channels) % per_group)
    for key in (weight, bias):
        if key is not None:
            yield Tie(DimRef(key, 0), DimRef(y, 1))


def _channel_dim(view: NodeView) -> list[int]:
    return [1]


def _shrink_group_norm(view: NodeView, ctx):
    view.module.num_channels = ctx.new_size(DimRef(view.tensor_args()[0], 1))


def _check_group_norm(module: nn.GroupNorm, x: torch.Tensor) -> None:
    if x.dim() < 2 or x.shape[1] != module.num_channels:
        raise RuntimeError(f"GroupNorm expects {module.num_channels} channels, input has shape {tuple(x.shape)}")
    _check_parameter_shapes(module, ("weight", "bias"), (x.shape[1],))


@register(nn.GroupNorm, shrink=_shrink_group_norm, normalizes=_channel_dim, same_shape=_check_group_norm)
def group_norm_module(view: NodeView):
    norm = view.module
    weight = view.param("weight") if norm.weight is not None else None
    bias = view.param("bias") if norm.bias is not None else None
    return group_norm_ties(view, view.tensor_args()[0], view.out(), weight, bias, norm.num_groups)


@register(F.group_norm, normalizes=_channel_dim)
def group_norm_function(view: NodeView):
    x, groups = view.key_of(view.arg(0, "input")), view.arg(1, "num_groups")
    if x is None or not isinstance(groups, int):
        return []
    weight, bias = view.key_of(view.arg(2, "weight")), view.key_of(view.arg(3, "bias"))
    return group_norm_ties(view, x, view.out(), weight, bias, groups)
