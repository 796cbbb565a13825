"""Re-estimate BatchNorm running statistics of a pruned model on the calibration data.

Removing channels shifts the distribution that every later BatchNorm sees, while its running mean
and variance still describe the original model; without fine-tuning that mismatch alone can drop a
pruned network to chance. A pass over the calibration data in train mode (cumulative averages, no
gradients) re-estimates them; nothing else changes.
"""

from __future__ import annotations

import torch

from ..graph.inputs import Batch


def batch_norms(model: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, batches: list[Batch]) -> int:
    """Reset and re-estimate every BatchNorm's running statistics in place; return how many were updated."""
    norms = batch_norms(model)
    if not norms or not batches:
        return 0
    flags = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over all calibration batches
        norm.train()
    try:
        for batch in batches:
            model(*batch.inputs)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        for module, flag in flags:
            module.training = flag
    return len(norms)
