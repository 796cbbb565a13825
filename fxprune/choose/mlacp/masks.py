"""Removed channels as zeros: the masked model that layer-wise methods work on before the rewrite.

Zeroing every parameter slice of a removed channel makes the model compute exactly what the
physically pruned model will (the correctness oracle of fxprune), so later layers can be judged
and refined against the pruned network while it still has its original shapes. ``ChannelMasks``
remembers what was zeroed so that refinement steps cannot bring a removed weight back.
"""

from __future__ import annotations

import numpy as np
import torch

from ...analysis.analyze import Analysis
from ...analysis.grouping import ChannelGroup, Member
from ...graph.tensors import param_name


class ChannelMasks:
    """For every parameter that lost slots, a tensor of ones (kept) and zeros (removed)."""

    def __init__(self, analysis: Analysis):
        self.analysis = analysis
        self.masks: dict[str, torch.Tensor] = {}

    def remove(self, group: ChannelGroup, channels: np.ndarray, members: list[Member] | None = None) -> None:
        """Zero ``channels`` (positions within ``group``) in every parameter of the group, or only in the
        slices ``members`` name (a consumer's input columns: the channel is then computed but not read)."""
        if len(channels) == 0:
            return
        gm = self.analysis.gm
        for member in members if members is not None else group.params(self.analysis.table):
            name = param_name(member.ref.key)
            param = gm.get_parameter(name)
            mask = self.masks.setdefault(name, torch.ones_like(param, dtype=torch.bool))
            gone = torch.as_tensor(member.index[channels].ravel(), device=param.device)
            mask.index_fill_(member.ref.dim, gone, False)
        self.apply()

    @torch.no_grad()
    def restore(self, members: list[Member], channels: np.ndarray, originals: dict[str, torch.Tensor]) -> None:
        """Give ``channels`` back their values in ``originals`` in the slices ``members`` name."""
        gm = self.analysis.gm
        for member in members:
            name = param_name(member.ref.key)
            param, mask = gm.get_parameter(name), self.masks.get(name)
            back = torch.as_tensor(member.index[channels].ravel(), device=param.device)
            if mask is not None:
                mask.index_fill_(member.ref.dim, back, True)
            param.index_copy_(member.ref.dim, back, originals[name].index_select(member.ref.dim, back))

    @torch.no_grad()
    def apply(self, names=None) -> None:
        """Zero the removed slots again (after an optimizer step)."""
        for name in names if names is not None else self.masks:
            if name in self.masks:
                self.analysis.gm.get_parameter(name).mul_(self.masks[name])
