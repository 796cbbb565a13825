"""Ops that join or cut tensors along a dimension: cat, stack, split, chunk, unbind, indexing.

``cat([a, b], dim=1)`` with a of 3 and b of 5 channels: output channel k is a's channel k for
k < 3 and b's channel k − 3 after. ``split``/``chunk`` are the inverse. Indexing with a slice
``x[:, 2:7]`` ties output channel k to input channel k + 2; an integer index removes the dim, so the
indexed dim stays whole. torch.export's ``aten.slice.Tensor`` and ``aten.select.int`` are the same
indexing, one dim at a time, and have rules of their own here (their arguments differ from getitem's).
"""

from __future__ import annotations

import operator

import numpy as np
import torch
from torch.fx.passes.shape_prop import TensorMetadata

from ..graph.shapes import tensor_shapes
from ..graph.tensors import DimRef, output_key
from .base import NodeView, Tie, register


def _cat_dim(view: NodeView, default: int = 0) -> int:
    """``dim`` of cat/stack, also when given as ``axis=`` (as ``torch.concatenate`` names it)."""
    dim = view.arg(1, "dim", view.node.kwargs.get("axis", default))
    return dim % len(view.shape(view.out()))


@register(torch.cat, torch.concat, torch.concatenate)
def concatenate(view: NodeView):
    tensors, out = view.arg(0, "tensors"), view.out()
    dim = _cat_dim(view)
    offset = 0
    for value in tensors:
        key = view.key_of(value)
        if key is None:
            return
        size = view.shape(key)[dim]
        for d in range(len(view.shape(out))):
            if d == dim:
                yield Tie(DimRef(key, d), DimRef(out, d), np.arange(size), np.arange(offset, offset + size))
            else:
                yield Tie(DimRef(key, d), DimRef(out, d))
        offset += size


@register(torch.stack)
def stack(view: NodeView):
    """Stacked tensors are tied dim for dim; the new dim stays whole."""
    dim = _cat_dim(view)
    for value in view.arg(0, "tensors"):
        key = view.key_of(value)
        if key is None:
            return
        for d in range(len(view.shape(key))):
            yield Tie(DimRef(key, d), DimRef(view.out(), d if d < dim else d + 1))


def _pieces(view: NodeView) -> list[str]:
    return [view.out((i,)) for i in range(len(tensor_shapes(view.node)))]


def _split_dim(view: NodeView) -> int:
    default = 0
    dim = view.arg(2, "dim", default)
    return dim % len(view.shape(view.key_of(view.arg(0))))


def _shrink_split(view: NodeView, ctx):
    """Rewrite ``split``/``chunk`` with the pieces' new sizes, as ``torch.split(x, sizes, dim)``."""
    dim = _split_dim(view)
    sizes = [ctx.new_size(DimRef(piece, dim)) for piece in _pieces(view)]
    old = [view.shape(piece)[dim] for piece in _pieces(view)]
    if sizes == old:
        return
    view.node.op, view.node.target = "call_function", torch.split
    view.node.args, view.node.kwargs = (view.node.args[0], sizes, dim), {}


@register(torch.split, "split", torch.chunk, "chunk", torch.tensor_split, "tensor_split", shrink=_shrink_split,
          latency="free")
def split(view: NodeView):
    """Piece ``p`` of the cut dim is the input's slots ``offset_p ..``; other dims tie as they are."""
    x = view.key_of(view.arg(0))
    if x is None:
        return
    dim = _split_dim(view)
    for piece, taken in zip(_pieces(view), _piece_slots(view, x, dim)):
        for d in range(len(view.shape(x))):
            if d == dim:
                yield Tie(DimRef(x, d), DimRef(piece, d), taken, np.arange(len(taken)))
            else:
                yield Tie(DimRef(x, d), DimRef(piece, d))


def _piece_slots(view: NodeView, x: str, dim: int) -> list[np.ndarray]:
    """The input slots of each piece: consecutive runs, or for ``tensor_split(x, [i, j, ...])`` the
    slices ``x[:i]``, ``x[i:j]``, … (which overlap when the indices decrease); none when unknown."""
    size, pieces = view.shape(x)[dim], _pieces(view)
    indices = view.arg(1, "indices", view.node.kwargs.get("tensor_indices_or_sections"))
    if view.target in (torch.tensor_split, "tensor_split") and isinstance(indices, (list, tuple)):
        if not all(isinstance(i, int) for i in indices) or len(indices) + 1 != len(pieces):
            return []
        bounds = [0, *indices, size]
        return [np.arange(size)[start:stop] for start, stop in zip(bounds, bounds[1:])]
    sizes = [view.shape(piece)[dim] for piece in pieces]
    if sum(sizes) != size:
        return []
    return [np.arange(start, start + n) for start, n in zip(np.cumsum([0, *sizes[:-1]]).tolist(), sizes)]


@register("unbind", torch.unbind, latency="free")
def unbind(view: NodeView):
    """Each piece drops the unbound dim, which stays whole; the other dims tie as they are."""
    x = view.key_of(view.arg(0))
    dim = view.arg(1, "dim", 0) % len(view.shape(x))
    for piece in _pieces(view):
        for d in range(len(view.shape(x))):
            if d != dim:
                yield Tie(DimRef(x, d), DimRef(piece, d if d < dim else d - 1))


def _index_ties(view: NodeView, x: str, index):
    """Ties of ``x[index]`` for basic indexing with ints, slices, None and Ellipsis."""
    index = index if isinstance(index, tuple) else (index,)
    rank = len(view.shape(x))
    if any(isinstance(i, bool) or not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in index):
        return  # advanced indexing (a bool is a mask of one, not a position): nothing tied, so all frozen
    if Ellipsis in index:
        at = index.index(Ellipsis)
        fill = rank - sum(1 for i in index if i is not None and i is not Ellipsis)
        index = index[:at] + (slice(None),) * fill + index[at + 1:]
    index = index + (slice(None),) * (rank - sum(1 for i in index if i is not None))
    in_dim = out_dim = 0
    for item in index:
        if item is None:
            out_dim += 1
            continue
        if isinstance(item, slice):
            yield from _slice_tie(view, DimRef(x, in_dim), DimRef(view.out(), out_dim), item)
            out_dim += 1
        in_dim += 1


def _slice_tie(view: NodeView, source: DimRef, target: DimRef, item: slice):
    bounds = (item.start, item.stop, item.step)
    if not all(b is None or isinstance(b, int) for b in bounds) or item.step not in (None, 1):
        return
    taken = np.arange(view.table.size[source])[item]
    yield Tie(source, target, taken, np.arange(len(taken)))


def _shrink_getitem(view: NodeView, ctx):
    """Move literal slice bounds to where the kept channels now are."""
    x = view.key_of(view.arg(0))
    index = view.arg(1)
    if x is None or not isinstance(index, (tuple, slice)) or Ellipsis in (index if isinstance(index, tuple) else ()):
        return
    items = list(index) if isinstance(index, tuple) else [index]
    dim = 0
    for position, item in enumerate(items):
        if isinstance(item, slice) and (item.start or item.stop is not None):
            kept = ctx.kept(DimRef(x, dim))
            if kept is not None:
                size = view.shape(x)[dim]
                start, stop, _ = item.indices(size)
                items[position] = slice(int((kept < start).sum()), int((kept < stop).sum()), item.step)
        dim += item is not None
    view.node.update_arg(1, tuple(items) if isinstance(index, tuple) else items[0])


@register(operator.getitem, shrink=_shrink_getitem, latency="free")
def getitem(view: NodeView):
    """Picking one element of a tuple output, or indexing a tensor."""
    source, index = view.arg(0), view.arg(1)
    if not isinstance(source, torch.fx.Node) or not tensor_shapes(view.node):
        return
    shapes = tensor_shapes(source)
    position = tuple_position(view.node)
    if () in shapes:
        yield from _index_ties(view, view.key_of(source), index)
    elif position is not None and (position,) in shapes:
        element = view.out()
        for d in range(len(view.shape(element))):
            yield Tie(DimRef(output_key(source, (position,)), d), DimRef(element, d))


def tuple_position(node: torch.fx.Node) -> int | None:
    """For ``getitem(t, i)`` on a tuple-valued node: the element it picks (``i`` made non-negative)."""
    source, index = node.args[0], node.args[1]
    meta = source.meta.get("tensor_meta") if isinstance(source, torch.fx.Node) else None
    if not isinstance(meta, (tuple, list)) or isinstance(meta, TensorMetadata):  # a tensor, not a tuple of them
        return None
    if not isinstance(index, int) or isinstance(index, bool):
        return None
    return index % len(meta) if -len(meta) <= index < len(meta) else None


def _dim_arg(view: NodeView, x: str, index: int = 1) -> int | None:
    dim = view.arg(index, "dim", 0)
    return dim % len(view.shape(x)) if isinstance(dim, int) and view.shape(x) else None


def _aten_slice(view: NodeView) -> slice:
    return slice(view.arg(2, "start"), view.arg(3, "end"), view.arg(4, "step", 1))


def _shrink_aten_slice(view: NodeView, ctx):
    """Move literal bounds to where the kept channels of the sliced dim now are."""
    x = view.key_of(view.arg(0))
    dim = _dim_arg(view, x) if x is not None else None
    item = _aten_slice(view)
    kept = ctx.kept(DimRef(x, dim)) if dim is not None else None
    if kept is None or not all(b is None or isinstance(b, int) for b in (item.start, item.stop)):
        return
    start, stop, _ = item.indices(view.shape(x)[dim])
    args = list(view.node.args) + [None] * (4 - len(view.node.args))
    args[2], args[3] = int((kept < start).sum()), int((kept < stop).sum())
    view.node.args = tuple(args)


@register(torch.ops.aten.slice.Tensor, shrink=_shrink_aten_slice, latency="free")
def slice_aten(view: NodeView):
    """``aten.slice.Tensor(x, dim, start, end, step)`` is ``x[..., start:end:step]`` at ``dim``: the
    other dims pass; output slot k of ``dim`` is input slot ``start + k`` (unit steps with literal
    bounds; anything else leaves the dim untied, so frozen)."""
    x = view.key_of(view.arg(0))
    dim = _dim_arg(view, x) if x is not None else None
    if dim is None:
        return
    out = view.out()
    yield from _slice_tie(view, DimRef(x, dim), DimRef(out, dim), _aten_slice(view))
    for d in range(len(view.shape(x))):
        if d != dim:
            yield Tie(DimRef(x, d), DimRef(out, d))


@register(torch.ops.aten.select.int, latency="free")
def select_aten(view: NodeView):
    """``aten.select.int(x, dim, i)`` is ``x[..., i]`` at ``dim``: the other dims pass (shifted past the
    removed one), ``dim`` itself stays whole, as an integer index does in getitem."""
    x = view.key_of(view.arg(0))
    dim = _dim_arg(view, x) if x is not None else None
    if dim is None:
        return
    for d in range(len(view.shape(x))):
        if d != dim:
            yield Tie(DimRef(x, d), DimRef(view.out(), d - (d > dim)))
