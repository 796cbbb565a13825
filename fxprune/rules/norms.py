"""Normalisations: BatchNorm, InstanceNorm, LayerNorm, RMSNorm and GroupNorm, as modules and functions.

A norm's vectors (weight, bias, running statistics) are one entry per channel, tied to that
channel. A norm whose statistics span the channels it normalises (LayerNorm, RMSNorm, GroupNorm,
BatchNorm with batch statistics) says so (``normalizes``): pruning changes those statistics, so the
pruned model is close to, not equal to, the masked one.
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


def _running_statistics(norm: nn.modules.batchnorm._BatchNorm) -> bool:
    """In inference with running statistics a BatchNorm scales and shifts each channel by constants."""
    return not norm.training and norm.running_mean is not None and norm.running_var is not None


@register(*BATCH_NORMS, shrink=_shrink_batch_norm, latency="fusable", same_shape=_check_batch_norm,
          channel_affine=_running_statistics)
@register(nn.SyncBatchNorm, shrink=_shrink_batch_norm, latency="fusable", channel_affine=_running_statistics)
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
