"""Rules for the nodes every graph has: inputs, outputs, parameters, and reads of a tensor's size."""

from __future__ import annotations

import operator

import torch
import torch.fx

from ..graph.shapes import tensor_shapes
from ..graph.tensors import DimRef, output_key, param_key
from .base import Freeze, NodeView, Observe, Tie, canonical_target, register

# Ops that take sizes as arguments and whose results the rewrite's shape check verifies.
# Ops that take sizes, with where their size arguments are: positions in ``args`` (a ``slice``) and the
# keyword. Anything else they take (the fill value of ``full``) is a value: a size used there freezes.
_SHAPE_TAKING_METHODS = {**dict.fromkeys(("view", "reshape", "expand", "new_zeros", "new_ones", "new_empty"),
                                         (slice(1, None), "size")),
                         "new_full": (slice(1, 2), "size")}
_SHAPE_TAKING_FUNCTIONS = {torch.reshape: (slice(1, 2), "shape"), torch.full: (slice(0, 1), "size"),
                           **dict.fromkeys((torch.zeros, torch.ones, torch.empty), (slice(0, None), "size"))}
# Scalar arithmetic a size may pass through on its way to such an op.
_SCALAR_STEPS = {operator.getitem, operator.floordiv, operator.mul, operator.add, operator.sub, operator.neg}


@register("placeholder", latency="free")
def graph_input(view: NodeView):
    """A graph input's channels are the caller's: never removed."""
    for path in tensor_shapes(view.node):
        for ref in view.dims(output_key(view.node, path)):
            yield Freeze(ref, f"input of the graph ({view.name})")


@register("output", latency="free")
def graph_output(view: NodeView):
    """A graph output's channels are the caller's (a classifier keeps its logits)."""
    for key in view.tensor_args():
        for ref in view.dims(key):
            yield Freeze(ref, "output of the graph")


@register("get_attr", latency="free")
def parameter_read(view: NodeView):
    """A parameter read directly (``self.weight`` passed to a function) is the parameter itself."""
    target = view.aliases.get(view.node.target)
    if target is None or () not in tensor_shapes(view.node):
        return
    for dim, ref in enumerate(view.dims(view.out())):
        yield Tie(ref, DimRef(param_key(target), dim))


def _as_shape(user: torch.fx.Node, value: torch.fx.Node) -> bool:
    """Whether ``user`` takes ``value`` only among its size arguments."""
    target = canonical_target(user)
    table = _SHAPE_TAKING_METHODS if isinstance(target, str) else _SHAPE_TAKING_FUNCTIONS
    where = table.get(target) if user.op in ("call_method", "call_function") else None
    if where is None:
        return False
    positions, keyword = where
    sizes = (user.args[positions], user.kwargs.get(keyword))
    rest = (user.args[:positions.start], user.args[positions.stop:] if positions.stop is not None else (),
            {k: v for k, v in user.kwargs.items() if k != keyword})
    return _mentions(sizes, value) and not _mentions(rest, value)


def _mentions(tree, value: torch.fx.Node) -> bool:
    hits = []
    torch.fx.node.map_arg(tree, lambda n: hits.append(n is value) or n)
    return any(hits)


def _shape_sink(node: torch.fx.Node) -> torch.fx.Node | None:
    """The first place a size read from ``node`` is used as a value rather than a shape (or None)."""
    stack, seen = [(user, node) for user in node.users], set()
    while stack:
        user, source = stack.pop()
        if (user, source) in seen:
            continue
        seen.add((user, source))
        if _as_shape(user, source):
            continue
        if user.op == "call_function" and user.target in _SCALAR_STEPS and not tensor_shapes(user):
            stack.extend((next_user, user) for next_user in user.users)
            continue
        return user
    return None


def _read_dims(node: torch.fx.Node, rank: int) -> dict[int, list[torch.fx.Node]]:
    """Which dimensions a shape read exposes, each with the nodes that carry that size on.

    ``x.shape[1]`` exposes dim 1; ``x.shape[-2:]`` (a resize target) exposes only the last two.
    """
    if canonical_target(node) == "size" and len(node.args) > 1:  # x.size(1), or aten.sym_size.int(x, 1)
        return {node.args[1] % rank: [node]}
    exposed: dict[int, list[torch.fx.Node]] = {}
    for user in node.users:
        index = user.args[1] if user.op == "call_function" and user.target is operator.getitem else None
        if isinstance(index, int):
            exposed.setdefault(index % rank, []).append(user)
        elif isinstance(index, slice):
            for dim in range(rank)[index]:
                exposed.setdefault(dim, []).append(user)
        else:
            return {d: [node] for d in range(rank)}
    return exposed


def _size_read(view: NodeView):
    """``x.size()``, ``x.shape``: fine while each size only feeds shape arguments (checked later)."""
    key = view.key_of(view.node.args[0])
    if key is None:
        return
    rank = len(view.shape(key))
    exposed = _read_dims(view.node, rank)
    for dim in range(rank):
        sink = next(filter(None, map(_shape_sink, exposed.get(dim, []))), None)
        ref = DimRef(key, dim)
        if sink is not None:
            yield Freeze(ref, f"its size is used as a value at node {sink.name}")
        else:
            yield Observe(ref)


@register("size", latency="free")
def size_method(view: NodeView):
    yield from _size_read(view)


@register(getattr, latency="free")
def attribute_read(view: NodeView):
    if view.arg(1) in ("shape",):
        yield from _size_read(view)
    elif view.arg(1) in ("dtype", "device", "ndim"):
        key = view.key_of(view.arg(0))
        for ref in view.dims(key) if key else []:
            yield Observe(ref)


@register("dim", latency="free")
def rank_read(view: NodeView):
    key = view.key_of(view.arg(0))
    for ref in view.dims(key) if key else []:
        yield Observe(ref)


@register(torch.ops.aten._assert_tensor_metadata.default, latency="free")
def metadata_check(view: NodeView):
    """torch.export's check of an input's dtype and device: it reads no channel, so removing any is fine."""
    for key in view.tensor_args():
        yield from (Observe(ref) for ref in view.dims(key))
