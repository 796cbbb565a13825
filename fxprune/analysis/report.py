"""A readable account of an analysis: each group, its layers and size, and why frozen ones stay."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..graph.tensors import DimRef, param_name
from ..rules import find_rule
from .analyze import Analysis


def _weight_layout(gm: torch.nn.Module, module: str) -> tuple[str, ...]:
    """What the weight dims of ``module`` are (its rule's ``weight_layout``: a ConvTranspose's is (in, out))."""
    try:
        rule = find_rule(("module", type(gm.get_submodule(module))))
    except AttributeError:
        rule = None
    return rule.weight_layout if rule is not None else ("out", "in")


def _layer_names(refs: list[DimRef], gm: torch.nn.Module) -> list[str]:
    """``param:layer1.0.conv1.weight`` dim 0 → ``layer1.0.conv1 (out)``; dim 1 → ``(in)``."""
    names: dict[str, None] = {}
    for ref in refs:
        module, _, attr = param_name(ref.key).rpartition(".")
        if attr != "weight" and any(param_name(r.key).startswith(module + ".weight") for r in refs):
            continue
        layout = _weight_layout(gm, module)
        side = (layout[ref.dim] if ref.dim < len(layout) else f"dim {ref.dim}") if attr == "weight" else attr
        names[f"{module or attr} ({side})"] = None
    return list(names)


@dataclass
class GroupSummary:
    channels: int
    layers: list[str]
    frozen_reason: str | None = None

    def __str__(self) -> str:
        layers = ", ".join(self.layers[:6]) + (f", … {len(self.layers) - 6} more" if len(self.layers) > 6 else "")
        state = "prunable" if self.frozen_reason is None else f"frozen: {self.frozen_reason}"
        return f"{self.channels:5d} channels  {state}\n       {layers}"


class Report:
    """What ``fxprune.analyze`` returns; ``print(report)`` lists every group."""

    def __init__(self, analysis: Analysis):
        self.analysis = analysis
        self.groups = [GroupSummary(g.size, _layer_names([m.ref for m in g.params(analysis.table, True)], analysis.gm))
                       for g in analysis.groups]
        self.frozen = [GroupSummary(f.size, _layer_names(f.spaces, analysis.gm), f.reason) for f in analysis.frozen]

    @property
    def prunable_channels(self) -> int:
        return sum(g.channels for g in self.groups)

    @property
    def frozen_channels(self) -> int:
        return sum(g.channels for g in self.frozen)

    def why_frozen(self, layer: str) -> list[str]:
        """Reasons the channels of parameters under ``layer`` are frozen (empty if none are)."""
        return [g.frozen_reason for g in self.frozen if any(name.startswith(layer) for name in g.layers)]

    def __str__(self) -> str:
        lines = [f"{len(self.groups)} prunable groups ({self.prunable_channels} channels), "
                 f"{len(self.frozen)} frozen groups ({self.frozen_channels} channels)"]
        lines += [f"[{i}] {g}" for i, g in enumerate(self.groups)]
        lines += [f"[frozen {i}] {g}" for i, g in enumerate(self.frozen)]
        if self.analysis.mixing_norms:
            lines.append("normalisations that mix pruned channels (outputs change slightly): "
                         + ", ".join(self.analysis.mixing_norms))
        return "\n".join(lines)
