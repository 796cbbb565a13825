"""ATen ops, as ``torch.export`` captures them, joined to the rules of the ops they compute.

``aten.conv2d.default(x, w, b, stride, padding, dilation, groups)`` takes ``F.conv2d``'s arguments in
``F.conv2d``'s order, so it is an alias of that rule: one rule, with its coupling, its rewrite and
its facts, serves both captures. An ATen op whose arguments differ from every FX target has a rule
of its own beside its kind (``aten.batch_norm`` in ``layers.py``). An ATen op that is in neither
freezes what it touches, with a reason, as any unknown op does.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from .base import alias

aten = torch.ops.aten

ALIASES = {
    # layers
    aten.conv1d.default: F.conv1d, aten.conv2d.default: F.conv2d, aten.conv3d.default: F.conv3d,
    aten.linear.default: F.linear, aten.layer_norm.default: F.layer_norm, aten.rms_norm.default: F.rms_norm,
    aten.group_norm.default: F.group_norm,
    # elementwise (in-place forms compute the same channels)
    aten.relu.default: torch.relu, aten.relu_.default: torch.relu, aten.hardtanh.default: F.hardtanh,
    aten.hardtanh_.default: F.hardtanh, aten.silu.default: F.silu, aten.silu_.default: F.silu,
    aten.gelu.default: F.gelu, aten.sigmoid.default: torch.sigmoid, aten.tanh.default: torch.tanh,
    aten.cos.default: torch.cos, aten.sin.default: torch.sin, aten.neg.default: torch.neg,
    aten.rsqrt.default: torch.rsqrt, aten.hardswish.default: F.hardswish, aten.hardswish_.default: F.hardswish,
    aten.hardsigmoid.default: F.hardsigmoid, aten.hardsigmoid_.default: F.hardsigmoid,
    aten.dropout.default: F.dropout, aten.dropout_.default: F.dropout, aten.contiguous.default: "contiguous",
    aten.clone.default: "clone", aten.pow.Tensor_Scalar: "pow",
    aten.to.dtype: "to", aten.to.dtype_layout: "to", aten.to.device: "to", aten.type_as.default: "type_as",
    aten.add.Tensor: operator.add, aten.add_.Tensor: operator.add, aten.sub.Tensor: operator.sub,
    aten.mul.Tensor: operator.mul, aten.mul_.Tensor: operator.mul, aten.div.Tensor: operator.truediv,
    aten.addcmul.default: torch.addcmul, aten.addcdiv.default: torch.addcdiv,
    # views and joins
    aten.view.default: "view", aten.reshape.default: torch.reshape, aten.flatten.using_ints: torch.flatten,
    aten.unflatten.int: torch.unflatten, aten.unsqueeze.default: torch.unsqueeze, aten.squeeze.dim: torch.squeeze,
    aten.permute.default: torch.permute, aten.transpose.int: torch.transpose, aten.expand.default: "expand",
    aten.cat.default: torch.cat, aten.chunk.default: torch.chunk, aten.split.Tensor: torch.split,
    aten.split_with_sizes.default: torch.split,
    # pooling and reductions
    aten.max_pool2d.default: F.max_pool2d, aten.avg_pool2d.default: F.avg_pool2d,
    aten.adaptive_avg_pool2d.default: F.adaptive_avg_pool2d, aten.mean.dim: torch.mean,
    aten.linalg_vector_norm.default: torch.linalg.vector_norm,
    aten.softmax.int: torch.softmax,
    aten.upsample_nearest1d.vec: F.interpolate, aten.upsample_nearest2d.vec: F.interpolate,
    aten.upsample_nearest3d.vec: F.interpolate, aten.upsample_linear1d.vec: F.interpolate,
    aten.upsample_bilinear2d.vec: F.interpolate, aten.upsample_trilinear3d.vec: F.interpolate,
    aten.upsample_bicubic2d.vec: F.interpolate,
    # products of activations
    aten.matmul.default: torch.matmul, aten.bmm.default: torch.bmm,
    # sizes read in a graph with a free batch dimension
    aten.sym_size.int: "size",
}

for aten_op, target in ALIASES.items():
    alias(aten_op, target)
