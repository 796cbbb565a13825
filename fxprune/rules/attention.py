"""Products of activations: matmul and einsum (attention scores, attention-weighted values), and
``scaled_dot_product_attention`` (both, with a softmax between).

In ``q @ k.transpose(-2, -1)`` the contracted dim is the same channel in both operands: removing
it from both drops one term of every dot product, exactly as zeroing the weights that make it.
"""

from __future__ import annotations

import operator

import torch

from ..graph.tensors import DimRef
from .base import NodeView, Tie, register

aten = torch.ops.aten


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


def _sdpa_args(view: NodeView) -> tuple:
    return tuple(view.key_of(view.arg(i, name)) for i, name in enumerate(("query", "key", "value", "attn_mask")))


def _shrink_sdpa(view: NodeView, ctx):
    """Keep the logit scale of the original width: by default it is ``1 / sqrt(query width)``."""
    if view.node.kwargs.get("scale") is None and len(view.node.args) < 8:
        query = view.key_of(view.arg(0, "query"))
        view.node.kwargs = {**view.node.kwargs, "scale": view.shape(query)[-1] ** -0.5}


@register(torch.nn.functional.scaled_dot_product_attention, aten.scaled_dot_product_attention.default,
          shrink=_shrink_sdpa)
def scaled_dot_product_attention(view: NodeView):
    """``sdpa(q, k, v, mask)`` with q (…, L, E), k (…, S, E), v (…, S, Ev) → (…, L, Ev).

    E is contracted (query and key widths tied: removing index i drops one term of every logit, the
    scale kept at the original width), Ev passes to the output, L from q to the output, S from k to v
    and the mask's last dim; the leading (batch, head) dims tie across all four where their sizes agree
    (with grouped-query attention the key/value heads differ from the query's and stay whole). The
    mask's dims align with the logits (…, L, S) from the right; where it broadcasts it is left out.
    """
    q, k, v, mask = _sdpa_args(view)
    if None in (q, k, v):
        return
    out = view.out()
    sq, sk, sv, so = view.shape(q), view.shape(k), view.shape(v), view.shape(out)
    if min(len(sq), len(sk), len(sv)) < 2 or not len(sq) == len(sk) == len(sv) == len(so):
        return
    last = len(sq) - 1
    yield Tie(DimRef(q, last), DimRef(k, last))
    yield Tie(DimRef(v, last), DimRef(out, last))
    yield Tie(DimRef(q, last - 1), DimRef(out, last - 1))
    yield Tie(DimRef(k, last - 1), DimRef(v, last - 1))
    for d in range(last - 1):
        for other in (k, v, out):
            if view.shape(other)[d] == sq[d]:
                yield Tie(DimRef(q, d), DimRef(other, d))
    if mask is not None:
        logits = (*so[:-1], sk[-2])
        sm = view.shape(mask)
        for d in range(1, len(sm) + 1):
            if sm[-d] != 1 and sm[-d] == logits[-d]:
                partner = (k, last - 1) if d == 1 else (q, last - 1) if d == 2 else (q, len(logits) - d)
                yield Tie(DimRef(mask, len(sm) - d), DimRef(*partner))
