"""Data-free criteria: weight magnitude (L1/L2 over the whole group), BatchNorm scale, random.

A channel's magnitude is summed over every parameter slice it owns in its group: the producing
filter, its bias and BatchNorm entries, and the consuming columns of the next layers
("group magnitude"), so channels that are dead everywhere rank last.
"""

from __future__ import annotations

import numpy as np
import torch

from ...analysis.analyze import Analysis
from ...graph.tensors import param_key, param_name


def parameter(analysis: Analysis, key: str) -> torch.Tensor:
    name = param_name(key)
    try:
        return analysis.gm.get_parameter(name)
    except AttributeError:
        return analysis.gm.get_buffer(name)


def per_index(tensor: torch.Tensor, dim: int, power: int) -> np.ndarray:
    """``sum |t|^power`` over every dim but ``dim``: one value per index along ``dim``."""
    values = tensor.detach().abs().float()
    if power != 1:
        values = values.pow(power)
    other = [d for d in range(values.dim()) if d != dim]
    return (values.sum(other) if other else values).cpu().numpy().astype(np.float64)


def _group_magnitude(analysis: Analysis, power: int) -> list[np.ndarray]:
    cache: dict = {}
    scores = []
    for group in analysis.groups:
        score = np.zeros(group.size)
        for member in group.params(analysis.table):
            if member.ref not in cache:
                cache[member.ref] = per_index(parameter(analysis, member.ref.key), member.ref.dim, power)
            score += cache[member.ref][member.index].sum(axis=1)
        scores.append(score)
    return scores


def l1(analysis: Analysis, batches=None) -> list[np.ndarray]:
    """Sum of absolute weights a channel owns across its group."""
    return _group_magnitude(analysis, 1)


def l2(analysis: Analysis, batches=None) -> list[np.ndarray]:
    """Sum of squared weights a channel owns across its group."""
    return _group_magnitude(analysis, 2)


def bn_scale(analysis: Analysis, batches=None) -> list[np.ndarray]:
    """|γ| of the BatchNorm layers in the group (Network Slimming); L1 where a group has none."""
    norms = {param_key(f"{name}.weight") for name, m in analysis.gm.named_modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.affine}
    fallback = l1(analysis)
    scores = []
    for group, backup in zip(analysis.groups, fallback):
        members = [m for m in group.params(analysis.table) if m.ref.key in norms]
        if not members:
            scores.append(backup)
            continue
        score = np.zeros(group.size)
        for member in members:
            score += per_index(parameter(analysis, member.ref.key), 0, 1)[member.index].sum(axis=1)
        scores.append(score)
    return scores


def random_scores(analysis: Analysis, batches=None, seed: int = 0) -> list[np.ndarray]:
    """Uniform random scores: the floor any criterion must beat."""
    rng = np.random.default_rng(seed)
    return [rng.random(group.size) for group in analysis.groups]
