"""The correctness oracle: a pruned model must equal the original with the removed channels zeroed.

Zeroing every parameter entry that belongs to a removed channel (the producing filter, its bias and
BatchNorm scale and shift, and each consumer's input column) makes those channels contribute
nothing, which is exactly what removing them does, as long as no normalisation mixes channels
(LayerNorm/GroupNorm; ``analysis.mixing_norms`` lists them).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx

from ..analysis.analyze import Analysis
from ..choose.plan import Plan, kept_slots, removed_components
from ..graph.outputs import compare
from ..graph.tensors import param_name


def randomize_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every weight random values and BatchNorm non-trivial statistics, in place; returns ``model``.

    Checks on freshly built models can be vacuous: torchvision's ViT head is zero-initialised, so
    every output is zero and any comparison passes.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                scale = param[0].numel() ** -0.5 if param.dim() > 1 else 0.1
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
                if "weight" in name and param.dim() == 1:
                    param.add_(1.0)
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model


def masked_original(analysis: Analysis, plan: Plan) -> torch.fx.GraphModule:
    """A copy of the analysed model with every parameter slot of the removed channels set to zero."""
    gm = copy.deepcopy(analysis.gm)
    kept = kept_slots(analysis, removed_components(analysis, plan))
    table = analysis.table
    with torch.no_grad():
        for ref, keep in kept.items():
            if ref.key not in table.param_keys or ref.key in table.buffer_keys:
                continue
            tensor = gm.get_parameter(param_name(ref.key))
            gone = np.setdiff1d(np.arange(table.size[ref]), keep)
            tensor.index_fill_(ref.dim, torch.as_tensor(gone), 0.0)
    return gm


@dataclass
class OracleResult:
    max_abs_diff: float
    output_scale: float
    exact: bool  # False where a channel-mixing norm makes equality approximate

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.output_scale, 1e-12)


def check(analysis: Analysis, plan: Plan, pruned: torch.nn.Module, inputs: tuple) -> OracleResult:
    """Compare ``pruned`` with the masked original on ``inputs``."""
    diff, scale = compare(pruned, masked_original(analysis, plan), inputs)
    return OracleResult(diff, scale, exact=not analysis.mixing_norms)
