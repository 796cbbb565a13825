"""Elementwise ops: channel ``i`` in is channel ``i`` out.

Unary ops (activations, dropout, stochastic depth, copies) tie every dimension of the input to the
same dimension of the output. Binary ops (``x + y`` residuals, ``x * gate`` squeeze-excite) tie each
operand's dimension to the output's where they have the same size; an operand broadcast along a
dimension (size 1) is left out of it.
"""

from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graph.tensors import DimRef
from .base import Lazy, NodeView, Observe, Tie, register, same_dims

# torchvision's, named so that ``import fxprune`` does not import torchvision (and with it its models)
STOCHASTIC_DEPTH = Lazy("torchvision.ops.stochastic_depth:StochasticDepth")
STOCHASTIC_DEPTH_FUNCTION = Lazy("torchvision.ops.stochastic_depth:stochastic_depth")

# Runtimes fold these into the conv or linear layer they follow (choose.cost: latency="fusable").
FUSABLE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh)
FUSABLE_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.leaky_relu, F.hardtanh)
# No work at inference: dropout is the identity in eval mode, copies and casts are free or folded.
FREE_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
FREE_FUNCTIONS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d)
FREE_METHODS = ("contiguous", "detach", "float", "to", "type")
UNARY_MODULES = (
    nn.GELU, nn.SiLU, nn.Sigmoid, nn.Hardsigmoid, nn.Hardswish, nn.Tanh, nn.Mish, nn.ELU, nn.SELU, nn.CELU,
    nn.Softplus, nn.Softsign, nn.Tanhshrink, STOCHASTIC_DEPTH,
)
UNARY_FUNCTIONS = (
    F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.elu, F.mish, F.softplus, F.tanh, F.sigmoid,
    torch.sigmoid, torch.tanh, torch.exp, torch.abs, torch.neg, torch.sqrt, torch.clamp, torch.cos, torch.sin,
    torch.nn.functional.relu_, torch.square, torch.rsqrt, STOCHASTIC_DEPTH_FUNCTION, operator.neg,
)
UNARY_METHODS = (
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "exp", "abs", "neg", "sqrt", "rsqrt", "clamp", "cos", "sin",
    "clamp_min", "clamp_max", "clone", "half", "square", "pow", "softplus",
)
BINARY_FUNCTIONS = (
    operator.sub, operator.mul, operator.truediv, operator.iadd, operator.imul,
    torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum, torch.where, torch.addcmul, torch.addcdiv,
)
BINARY_METHODS = ("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum", "addcmul",
                  "addcdiv")


def no_shape_check(module: nn.Module, x: torch.Tensor) -> None:
    """An elementwise module accepts any shape and returns it."""


@register(*FUSABLE_MODULES, latency="fusable", same_shape=no_shape_check)
@register(*FUSABLE_FUNCTIONS, latency="fusable")
@register(*FREE_MODULES, latency="free", same_shape=no_shape_check)
@register(*FREE_FUNCTIONS, *FREE_METHODS, latency="free")
@register(*UNARY_MODULES, same_shape=no_shape_check)
@register(*UNARY_FUNCTIONS, *UNARY_METHODS)
def unary(view: NodeView):
    """``y = f(x)``: every dimension of ``x`` is the same dimension of ``y``."""
    inputs = view.tensor_args()
    if not inputs or view.out() not in view.table.shapes or view.shape(inputs[0]) != view.shape(view.out()):
        return []
    return same_dims(inputs[0], view.out(), view)


@register("type_as")
def cast_like(view: NodeView):
    """``y = x.type_as(other)``: ``x`` in ``other``'s dtype; ``other`` is read for its dtype alone, so
    its channels may go (a grid built from a feature map's dtype)."""
    x, other = view.key_of(view.arg(0)), view.key_of(view.arg(1, "other"))
    if x is not None:
        yield from same_dims(x, view.out(), view)
    if other is not None and other != x:
        yield from (Observe(ref) for ref in view.dims(other))


@register(operator.add, torch.add, latency="fusable")  # a residual add joins the conv kernel before it
@register("expand_as", latency="free")  # y takes the other operand's shape: its dims tie to y's
@register(*BINARY_FUNCTIONS, *BINARY_METHODS)
def broadcast(view: NodeView):
    """``y = a ∘ b`` with broadcasting: dims aligned from the right are tied where sizes agree.

    Example: ``x (1,5,7,7) * gate (1,5,1,1)`` ties ``x[dim 1]``, ``gate[dim 1]`` and ``y[dim 1]``;
    the gate's size-1 spatial dims are left out (and so stay as they are).
    """
    out = view.out()
    if out not in view.table.shapes:  # arithmetic on sizes, not tensors
        return
    out_shape = view.shape(out)
    for key in view.tensor_args():
        shape = view.shape(key)
        shift = len(out_shape) - len(shape)
        for dim, size in enumerate(shape):
            if size == out_shape[dim + shift]:
                yield Tie(DimRef(key, dim), DimRef(out, dim + shift))
