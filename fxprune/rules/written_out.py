"""Ops that models write out as several nodes, recognised as the one op whose rule knows them.

RMSNorm as Llama, Mistral, Qwen, Gemma and T5 write it by hand,

    x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)

is five nodes to a graph (by either capture). Read node by node, the mean over the hidden size freezes
that size in every layer, and with it the embeddings, every norm and the head. ``fuse_written_out``
replaces the five by one ``F.rms_norm(x, [hidden], None, eps)`` node, which computes the same values
and whose rule ties the hidden size through the norm, marking it as a norm whose statistics span the
channels it normalises (``normalizes``, as LayerNorm's rule does). The multiplication by the norm's
weight stays a node of its own: an elementwise product, tied to the hidden size by its own rule.
"""

from __future__ import annotations

import operator

import torch
import torch.fx
import torch.nn.functional as F

from ..graph.shapes import tensor_shapes
from .base import canonical_target

_POW = {"pow", torch.pow}
_MEAN = {"mean", torch.mean}
_ADD = {"add", torch.add, operator.add}
_RSQRT = {"rsqrt", torch.rsqrt}
_MUL = {"mul", torch.mul, operator.mul}


def _only_user(node) -> torch.fx.Node | None:
    users = list(node.users) if isinstance(node, torch.fx.Node) else []
    return users[0] if len(users) == 1 else None


def _is(node, targets) -> bool:
    return isinstance(node, torch.fx.Node) and node.op in ("call_function", "call_method") \
        and canonical_target(node) in targets


def _argument(node: torch.fx.Node, index: int, name: str, default=None):
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _last_dim_mean(node: torch.fx.Node, rank: int) -> bool:
    dims, keepdim = _argument(node, 1, "dim"), _argument(node, 2, "keepdim", False)
    dims = tuple(dims) if isinstance(dims, (list, tuple)) else (dims,)
    return keepdim is True and len(dims) == 1 and dims[0] in (-1, rank - 1) and not node.kwargs.get("dtype")


def _rms_norm_at(pow_node: torch.fx.Node):
    """``(x, eps, nodes)`` when ``pow_node`` starts a written-out RMSNorm over the last dim, else None;
    ``nodes`` from the last (the product, whose value the norm is) to ``pow_node``."""
    x = pow_node.args[0] if pow_node.args else None
    shape = tensor_shapes(x).get(()) if isinstance(x, torch.fx.Node) else None
    if shape is None or len(shape) < 1 or _argument(pow_node, 1, "exponent") != 2:
        return None
    mean = _only_user(pow_node)
    if not _is(mean, _MEAN) or mean.args[0] is not pow_node or not _last_dim_mean(mean, len(shape)):
        return None
    add = _only_user(mean)
    if not _is(add, _ADD) or len(add.args) != 2 or add.kwargs:
        return None
    eps = add.args[1] if add.args[0] is mean else add.args[0]
    rsqrt = _only_user(add)
    if not isinstance(eps, float) or not _is(rsqrt, _RSQRT):
        return None
    product = _only_user(rsqrt)
    if not _is(product, _MUL) or set(product.args) != {x, rsqrt} or product.kwargs:
        return None
    return x, eps, [product, rsqrt, add, mean, pow_node]


def fuse_written_out(gm: torch.fx.GraphModule) -> int:
    """Replace each written-out RMSNorm in ``gm`` (shapes recorded) by one ``F.rms_norm`` node, in place;
    the number replaced."""
    found = [m for n in gm.graph.nodes if _is(n, _POW) and (m := _rms_norm_at(n)) is not None]
    for x, eps, nodes in found:
        product = nodes[0]
        with gm.graph.inserting_before(product):
            norm = gm.graph.call_function(F.rms_norm, (x, [tensor_shapes(x)[()][-1]], None, eps))
        norm.meta = dict(product.meta)
        product.replace_all_uses_with(norm)
        for node in nodes:
            gm.graph.erase_node(node)
    if found:
        gm.graph.lint()
        gm.recompile()
    return len(found)
