"""Re-estimate BatchNorm running statistics of a pruned model on the calibration data.

Removing channels shifts the distribution that every later BatchNorm sees, while its running mean
and variance still describe the original model; without fine-tuning that mismatch alone can drop a
pruned network to chance. A pass over the calibration data in train mode (cumulative averages, no
gradients) re-estimates them; nothing else changes.

The cumulative average gives every batch the same weight. Under ``torch.distributed`` each rank
averages its own batches and the averages are then combined weighted by each rank's batch count,
so every rank ends with the statistics one process would compute on all the ranks' batches.
"""

from __future__ import annotations

import torch

from ..graph.distributed import all_reduce_sum, world_size
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
        _average_over_ranks(norms)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        for module, flag in flags:
            module.training = flag
    return len(norms)


def _average_over_ranks(norms) -> None:
    """Combine each rank's running averages, weighted by how many batches each rank saw."""
    if world_size() == 1:
        return
    for norm in norms:
        count = norm.num_batches_tracked.double()
        total = all_reduce_sum(count.clone())
        for stats in (norm.running_mean, norm.running_var):
            stats.copy_(all_reduce_sum(stats.double() * count) / total)
        norm.num_batches_tracked.copy_(total.long())
