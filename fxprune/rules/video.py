"""Helpers of torchvision's video models that FX keeps as single calls (they are ``torch.fx.wrap``-ped).

MViT wraps its pooling attention in ``_unsqueeze`` / ``_squeeze`` (add or drop a heads axis when the
input has none) and adds residuals with ``_add_shortcut``. Each moves or adds elements without
mixing channels, so the generic view and broadcast ties describe them:

    (B, N, C) --_unsqueeze(x, 4, 1)--> ((B, 1, N, C), 3): C tied to C, N to N, B to B.

Swin3D's ``shifted_window_attention_3d`` derives its head width from the input's size; its rule
lives beside Swin's in ``transformer.py`` and installs ``pruned_ops.window_attention_3d``.
"""

from __future__ import annotations

from ..graph.shapes import tensor_shapes
from .base import Lazy, NodeView, register, same_dims
from .reshape import regroup_ties

MVIT = "torchvision.models.video.mvit"  # named, not imported: ``import fxprune`` stays light


@register(Lazy(f"{MVIT}:_unsqueeze"))
def mvit_unsqueeze(view: NodeView):
    """Returns ``(x maybe unsqueezed, x.dim())``: element 0 is a view of ``x``."""
    x = view.key_of(view.arg(0))
    if x is None or (0,) not in tensor_shapes(view.node):
        return []
    return regroup_ties(view, x, view.out((0,)))


@register(Lazy(f"{MVIT}:_squeeze"))
def mvit_squeeze(view: NodeView):
    x = view.key_of(view.arg(0))
    return regroup_ties(view, x, view.out()) if x else []


@register(Lazy(f"{MVIT}:_add_shortcut"))
def mvit_add_shortcut(view: NodeView):
    """``x += shortcut`` (on all tokens or all but the class token): every dim tied across the three."""
    x, shortcut = view.key_of(view.arg(0)), view.key_of(view.arg(1))
    if x is None or shortcut is None or view.shape(x) != view.shape(shortcut):
        return []
    return same_dims(x, view.out(), view) + same_dims(shortcut, view.out(), view)
