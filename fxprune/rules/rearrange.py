"""Ops that move channels into space and back: ``pixel_shuffle`` and ``pixel_unshuffle``.

``pixel_shuffle(x, r)`` turns (N, C·r², H, W) into (N, C, H·r, W·r): output channel ``c`` is made of
input channels ``c·r² … c·r² + r² − 1``. Removing output channel ``c`` therefore removes those r²
input channels together (from the conv that made them), and the shuffle still sees a multiple of
r². ``pixel_unshuffle`` is the inverse. Spatial dims are new and stay whole.

    conv(5 → 20) → pixel_shuffle(2) → conv(5 → 11): five channels of four conv rows each.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graph.tensors import DimRef
from .base import NodeView, Tie, register


def _factor(view: NodeView) -> int | None:
    if view.node.op == "call_module":
        module = view.module
        return getattr(module, "upscale_factor", getattr(module, "downscale_factor", None))
    factor = view.arg(1, "upscale_factor", view.arg(1, "downscale_factor"))
    return factor if isinstance(factor, int) else None


def _batch_ties(view: NodeView, x: str, y: str):
    """Dims in front of (C, H, W) are tied as they are."""
    for d in range(len(view.shape(x)) - 3):
        yield Tie(DimRef(x, d), DimRef(y, d))


def _block_ties(view: NodeView, fine: str, coarse: str):
    """Channel ``c`` of the side with r² times more channels belongs to channel ``c // r²`` of the other."""
    factor = _factor(view)
    if factor is None:
        return
    channel = len(view.shape(fine)) - 3
    index = np.arange(view.shape(fine)[channel])
    yield Tie(DimRef(fine, channel), DimRef(coarse, channel), index, index // factor**2)
    yield from _batch_ties(view, fine, coarse)


@register(F.pixel_shuffle, torch.pixel_shuffle, nn.PixelShuffle)
def pixel_shuffle(view: NodeView):
    """Input channel ``i`` belongs to output channel ``i // r²``."""
    return _block_ties(view, view.tensor_args()[0], view.out())


@register(F.pixel_unshuffle, torch.pixel_unshuffle, nn.PixelUnshuffle)
def pixel_unshuffle(view: NodeView):
    """Output channel ``o`` comes from input channel ``o // r²``."""
    return _block_ties(view, view.out(), view.tensor_args()[0])
