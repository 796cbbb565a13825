"""Torch-Pruning 1.6.1 as the peer of the quality benchmark (``pip install -e ".[bench]"``).

Its ``GroupMagnitudeImportance`` and ``GroupTaylorImportance`` prune each layer by one ratio
(its default, local pruning), the classifier kept; the ratio is searched until the MACs match
fxprune's target (counted by the same FLOP counter).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from fxprune.measure import count_macs

PEERS = ("tp_magnitude", "tp_taylor")


def available() -> bool:
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        return False
    return True


def _prune(model, example, ratio: float, kind: str, calibration) -> torch.nn.Module:
    import torch_pruning as tp

    model = copy.deepcopy(model).eval()
    if kind == "tp_taylor":
        importance = tp.importance.GroupTaylorImportance()
        model.zero_grad()
        for xb, yb in calibration:
            F.cross_entropy(model(xb), yb).backward()
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=ratio,
                                  ignored_layers=[model.fc])
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def ratio_for_macs(model, example, target: float) -> float:
    """The uniform Torch-Pruning ratio whose pruned model keeps ``target`` of the MACs (bisection)."""
    original = count_macs(model, (example,))
    low, high = 0.0, 0.95
    for _ in range(10):
        middle = (low + high) / 2
        kept = count_macs(_prune(model, example, middle, "tp_magnitude", []), (example,)) / original
        low, high = (middle, high) if kept > target else (low, middle)
    return (low + high) / 2


def prune(model, example, ratio: float, kind: str, calibration) -> torch.nn.Module:
    return _prune(model, example, ratio, kind, calibration)
