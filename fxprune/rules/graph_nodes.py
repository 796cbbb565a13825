"""Rules for the nodes every graph has: inputs, outputs, parameters, and reads of a tensor's size."""

from __future__ import annotations

import operator

import torch
import torch.fx

from ..graph.shapes import tensor_shapes
from ..graph.tensors import DimRef, output_key, param_key
from .base import Freeze, NodeView, Observe, Tie, register

# Ops that take sizes as arguments and whose results the rewrite's shape check verifies.
_SHAPE_TAKING_METHODS = {"view", "reshape", "expand", "new_zeros", "new_ones", "new_empty", "new_full"}
_SHAPE_TAKING_FUNCTIONS = {torch.reshape, torch.zeros, torch.ones, torch.empty, torch.full}
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


def _shape_sink(node: torch.fx.Node) -> torch.fx.Node | None:
    """The first place a size read from ``node`` is used as a value rather than a shape (or None)."""
    stack, seen = list(node.users), set()
    while stack:
        user = stack.pop()
        if user in seen:
            continue
        seen.add(user)
        if user.op == "call_method" and user.target in _SHAPE_TAKING_METHODS:
            continue
        if user.op == "call_function" and user.target in _SHAPE_TAKING_FUNCTIONS:
            continue
        if user.op == "call_function" and user.target in _SCALAR_STEPS and not tensor_shapes(user):
            stack.extend(user.users)
            continue
        return user
    return None


def _read_dims(node: torch.fx.Node, rank: int) -> dict[int, list[torch.fx.Node]]:
    """Which dimensions a shape read exposes, each with the nodes that carry that size on.

    ``x.shape[1]`` exposes dim 1; ``x.shape[-2:]`` (a resize target) exposes only the last two.
    """
    if node.op == "call_method" and node.target == "size" and len(node.args) > 1:
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
