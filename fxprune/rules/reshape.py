"""Ops that move or regroup dimensions: view/reshape/flatten, permute/transpose, (un)squeeze, expand.

How each output dimension relates to the input's is read off the two shapes, not off the
arguments, so computed sizes (``x.size(0)``, ``-1``) need no special care:

* a dim kept as it is: tied slot for slot;
* dims merged into one (``flatten`` of C×H×W): output feature ``c·H·W + r`` is channel ``c``, for
  the outermost merged dim of size > 1 that is not a split-off group axis (see below);
* one dim split into several (channel shuffle's C → G × C/G): input channel ``g·(C/G) + i`` is
  inner index ``i``, so every group loses the same inner indices; the outer axis is marked a
  *group axis* and kept whole, and a later merge prefers the inner one again.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from ..graph.tensors import DimRef
from .base import NodeView, Tie, register, same_dims


def view_groups(in_shape, out_shape) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of input dims with runs of output dims of equal product; None if they don't pair.

    >>> view_groups((2, 6, 5), (2, 3, 2, 5))
    [([0], [0]), ([1], [1, 2]), ([2], [3])]
    """
    groups, i, j = [], 0, 0
    while i < len(in_shape) or j < len(out_shape):
        if i < len(in_shape) and in_shape[i] == 1:
            i += 1
            continue
        if j < len(out_shape) and out_shape[j] == 1:
            j += 1
            continue
        if i >= len(in_shape) or j >= len(out_shape):
            return None
        gi, gj, pi, pj = [i], [j], in_shape[i], out_shape[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj and i < len(in_shape):
                pi, gi = pi * in_shape[i], gi + [i]
                i += 1
            elif pj < pi and j < len(out_shape):
                pj, gj = pj * out_shape[j], gj + [j]
                j += 1
            else:
                return None
        groups.append((gi, gj))
    return groups


def _carrier(dims: list[int], shape, key: str, view: NodeView) -> int:
    """Of several dims merged or split together, the one whose slots carry the channel."""
    candidates = [d for d in dims if shape[d] > 1]
    free = [d for d in candidates if DimRef(key, d) not in view.group_axes]
    return (free or candidates)[0]


def _merge_ties(view, x, y, in_dims, out_dim):
    """Merged dims: output slot f belongs to the carrier dim's slot at f's multi-index."""
    in_shape = view.shape(x)
    carrier = _carrier(in_dims, in_shape, x, view)
    flat = np.arange(math.prod(in_shape[d] for d in in_dims))
    position = np.unravel_index(flat, [in_shape[d] for d in in_dims])[in_dims.index(carrier)]
    yield Tie(DimRef(x, carrier), DimRef(y, out_dim), position, flat)


def _split_ties(view, x, y, in_dim, out_dims):
    """Split dim: input slot f is the innermost output dim's slot at f's multi-index."""
    out_shape = view.shape(y)
    sized = [d for d in out_dims if out_shape[d] > 1]
    inner = sized[-1]
    for d in sized[:-1]:
        view.group_axes.add(DimRef(y, d))
    flat = np.arange(view.shape(x)[in_dim])
    position = np.unravel_index(flat, [out_shape[d] for d in out_dims])[out_dims.index(inner)]
    yield Tie(DimRef(x, in_dim), DimRef(y, inner), flat, position)


def regroup_ties(view: NodeView, x: str, y: str):
    """Ties between input and output of any op that only regroups elements in order."""
    groups = view_groups(view.shape(x), view.shape(y))
    for in_dims, out_dims in groups or []:
        if len(in_dims) == 1 and len(out_dims) == 1:
            yield Tie(DimRef(x, in_dims[0]), DimRef(y, out_dims[0]))
        elif len(out_dims) == 1:
            yield from _merge_ties(view, x, y, in_dims, out_dims[0])
        elif len(in_dims) == 1:
            yield from _split_ties(view, x, y, in_dims[0], out_dims)


def _shrink_sizes(view: NodeView, ctx):
    """Replace literal sizes in ``view(...)``/``reshape(...)``/``expand(...)`` by the new ones."""
    new_shape = ctx.new_shape(view.out())
    args = list(view.node.args)
    sizes = args[1:]
    packed = len(sizes) == 1 and isinstance(sizes[0], (list, tuple))
    if packed:
        sizes = list(sizes[0])
    if len(sizes) != len(new_shape):
        return
    fixed = [new if isinstance(old, int) and old != -1 else old for old, new in zip(sizes, new_shape)]
    view.node.args = tuple([args[0]] + ([type(args[1])(fixed)] if packed else fixed))


@register("view", "reshape", torch.reshape, shrink=_shrink_sizes, latency="free")
def reshape(view: NodeView):
    x = view.key_of(view.arg(0))
    return regroup_ties(view, x, view.out()) if x else []


@register("reshape_as", "view_as", latency="free")
def reshape_as(view: NodeView):
    """``x.reshape_as(other)``: ``x`` regrouped into ``other``'s shape, which is read at run time, so
    ``other``'s dims are tied to the output's and the sizes stay consistent with nothing to rewrite."""
    x, other = view.key_of(view.arg(0)), view.key_of(view.arg(1, "other"))
    if x is None or other is None:
        return []
    return [*regroup_ties(view, x, view.out()), *same_dims(other, view.out(), view)]


@register(torch.flatten, "flatten", nn.Flatten, nn.Unflatten, torch.unsqueeze, "unsqueeze", torch.squeeze,
          "squeeze", "unflatten", torch.unflatten, latency="free")
def regroup(view: NodeView):
    x = view.tensor_args()[0] if view.tensor_args() else None
    return regroup_ties(view, x, view.out()) if x else []


def _permutation(view: NodeView) -> list[int] | None:
    rank = len(view.shape(view.out()))
    target = view.target
    if target in ("permute", torch.permute):
        order = (view.node.args[1:] if target == "permute" else view.arg(1, "dims")) or view.node.kwargs.get("dims")
        if order and len(order) == 1 and isinstance(order[0], (list, tuple)):
            order = order[0]
        if not order or not all(isinstance(d, int) for d in order):
            return None
        return [d % rank for d in order]
    kwargs = view.node.kwargs
    a, b = view.arg(1, "dim0", kwargs.get("axis0")), view.arg(2, "dim1", kwargs.get("axis1"))
    if not isinstance(a, int) or not isinstance(b, int):
        return None
    order = list(range(rank))
    order[a % rank], order[b % rank] = order[b % rank], order[a % rank]
    return order


@register("permute", torch.permute, "transpose", torch.transpose, torch.swapaxes, "swapaxes", torch.swapdims,
          "swapdims")
def permute(view: NodeView):
    """Output dim k is input dim ``order[k]``."""
    x = view.key_of(view.arg(0))
    order = _permutation(view) if x else None
    for out_dim, in_dim in enumerate(order or []):
        yield Tie(DimRef(x, in_dim), DimRef(view.out(), out_dim))


@register("expand", shrink=_shrink_sizes, latency="free")
def expand(view: NodeView):
    """``expand`` repeats size-1 dims; the others are tied as they are."""
    x = view.key_of(view.arg(0))
    in_shape, out_shape = view.shape(x), view.shape(view.out())
    shift = len(out_shape) - len(in_shape)
    for dim, size in enumerate(in_shape):
        if size == out_shape[dim + shift] and size > 1:
            yield Tie(DimRef(x, dim), DimRef(view.out(), dim + shift))
