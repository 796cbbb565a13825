"""Ops that work over some dims and keep the others: pooling, resizing, padding, reductions, softmax.

Pooling a (N, C, H, W) tensor keeps N and C slot for slot and makes new H and W, which stay whole.
A reduction or softmax over the channel dim mixes channels, so that dim stays whole too.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graph.tensors import DimRef
from .base import NodeView, Tie, register

POOL_MODULES = {
    1: (nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d, nn.LPPool1d),
    2: (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d),
    3: (nn.MaxPool3d, nn.AvgPool3d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d),
}
POOL_FUNCTIONS = {
    1: (F.max_pool1d, F.avg_pool1d, F.adaptive_avg_pool1d, F.adaptive_max_pool1d),
    2: (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch._C._nn.avg_pool2d),
    3: (F.max_pool3d, F.avg_pool3d, F.adaptive_avg_pool3d, F.adaptive_max_pool3d, torch._C._nn.avg_pool3d),
}
_SPATIAL = {t: k for k, targets in POOL_MODULES.items() for t in targets}
_SPATIAL.update({t: k for k, targets in POOL_FUNCTIONS.items() for t in targets})


def leading_dims(view: NodeView, x: str, spatial: int):
    """Tie the dims in front of the last ``spatial`` dims (batch, channels) slot for slot, in the
    output or, for a pool that also returns its indices, in both of its outputs."""
    outputs = [view.out()] if view.out() in view.table.shapes else [
        view.out((i,)) for i in range(2) if view.out((i,)) in view.table.shapes]
    rank = len(view.shape(x))
    for out in outputs:
        for d in range(rank - spatial):
            if len(view.shape(out)) == rank and view.shape(x)[d] == view.shape(out)[d]:
                yield Tie(DimRef(x, d), DimRef(out, d))


def _pool_key(view: NodeView):
    return type(view.module) if view.node.op == "call_module" else view.target


@register(*_SPATIAL)
def pool(view: NodeView):
    x = view.tensor_args()[0]
    return leading_dims(view, x, _SPATIAL[_pool_key(view)])


@register(F.interpolate, F.upsample, nn.Upsample, nn.UpsamplingNearest2d, nn.UpsamplingBilinear2d)
def resize(view: NodeView):
    """Resizing makes new spatial dims (all but batch and channels)."""
    x = view.tensor_args()[0] if view.tensor_args() else None
    return leading_dims(view, x, len(view.shape(x)) - 2) if x else []


@register(F.pad)
def pad(view: NodeView):
    """Padding touches the last ``len(pad) // 2`` dims; the rest tie as they are."""
    x, amounts = view.key_of(view.arg(0, "input")), view.arg(1, "pad")
    if x is None or not isinstance(amounts, (list, tuple)):
        return []
    padded = [len(view.shape(x)) - 1 - i for i, (lo, hi) in enumerate(zip(amounts[::2], amounts[1::2]))
              if lo != 0 or hi != 0]
    return [Tie(DimRef(x, d), DimRef(view.out(), d)) for d in range(len(view.shape(x))) if d not in padded]


_NORMS = ("norm", torch.norm, torch.linalg.vector_norm)  # (x, p, dim, keepdim): the dims one argument later


def _reduced_dims(view: NodeView, rank: int, at: int) -> set[int] | None:
    dims = view.arg(at, "dim")
    if dims is None or (isinstance(dims, (list, tuple)) and not dims):  # no dims, or an empty list: all of them
        return set(range(rank))
    dims = dims if isinstance(dims, (list, tuple)) else [dims]
    if not all(isinstance(d, int) for d in dims):
        return None
    return {d % rank for d in dims}


@register("mean", torch.mean, "sum", torch.sum, "amax", torch.amax, "amin", torch.amin)
@register(*_NORMS)
def reduction(view: NodeView):
    """``x.mean((2, 3), keepdim=True)``, ``x.norm(2, (1, 2))``: the reduced dims stay whole; the others tie."""
    x = view.key_of(view.arg(0))
    if x is None:
        return
    rank = len(view.shape(x))
    at = 2 if view.target in _NORMS else 1
    reduced = _reduced_dims(view, rank, at)
    if reduced is None:
        return
    keepdim = view.arg(at + 1, "keepdim", False)
    out_dim = 0
    for d in range(rank):
        if d not in reduced:
            yield Tie(DimRef(x, d), DimRef(view.out(), out_dim))
        out_dim += (d not in reduced) or keepdim


def _softmax_dim(view: NodeView) -> int | None:
    if view.node.op == "call_module":
        return view.module.dim
    return view.arg(1, "dim")


@register(nn.Softmax, nn.LogSoftmax, F.softmax, F.log_softmax, "softmax", "log_softmax", torch.softmax)
def softmax(view: NodeView):
    """Softmax mixes values along its dim, which stays whole; the other dims tie."""
    x = view.tensor_args()[0]
    dim = _softmax_dim(view)
    if not isinstance(dim, int):
        return []
    rank = len(view.shape(x))
    return [Tie(DimRef(x, d), DimRef(view.out(), d)) for d in range(rank) if d != dim % rank]
