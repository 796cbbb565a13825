"""Products of activations: matmul and einsum (attention scores, attention-weighted values).

In ``q @ k.transpose(-2, -1)`` the contracted dim is the same channel in both operands: removing
it from both drops one term of every dot product, exactly as zeroing the weights that make it.
"""

from __future__ import annotations

import operator

import torch

from ..graph.tensors import DimRef
from .base import NodeView, Tie, register


@register(torch.matmul, "matmul", torch.bmm, "bmm", operator.matmul)
def matmul(view: NodeView):
    """``(…, n, k) @ (…, k, m) -> (…, n, m)``: k tied across operands, n and m to the output."""
    a, b = view.key_of(view.arg(0)), view.key_of(view.arg(1))
    if a is None or b is None:
        return
    out = view.out()
    sa, sb, so = view.shape(a), view.shape(b), view.shape(out)
    if len(sa) < 2 or len(sb) < 2:
        return
    yield Tie(DimRef(a, len(sa) - 1), DimRef(b, len(sb) - 2))
    yield Tie(DimRef(a, len(sa) - 2), DimRef(out, len(so) - 2))
    yield Tie(DimRef(b, len(sb) - 1), DimRef(out, len(so) - 1))
    for key, shape in ((a, sa), (b, sb)):
        shift = len(so) - len(shape)
        for d in range(len(shape) - 2):
            if shape[d] == so[d + shift]:
                yield Tie(DimRef(key, d), DimRef(out, d + shift))


@register(torch.einsum, torch.functional.einsum)
def einsum(view: NodeView):
    """Each subscript letter names one channel space shared by every operand dim (and output dim) it labels."""
    equation = view.arg(0)
    operands = list(view.node.args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if not isinstance(equation, str) or "..." in equation or "->" not in equation:
        return
    inputs, output = equation.replace(" ", "").split("->")
    labelled = list(zip(inputs.split(","), [view.key_of(o) for o in operands])) + [(output, view.out())]
    first: dict[str, DimRef] = {}
    for letters, key in labelled:
        if key is None or len(letters) != len(view.shape(key)):
            return
        for dim, letter in enumerate(letters):
            ref = DimRef(key, dim)
            if letter not in first:
                first[letter] = ref
            elif view.table.size[first[letter]] == view.table.size[ref]:
                yield Tie(first[letter], ref)
