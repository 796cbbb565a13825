"""Torch-Pruning 1.6.1 as the peer of the quality benchmark (``pip install -e ".[bench]"``).

Its ``GroupMagnitudeImportance`` and ``GroupTaylorImportance`` prune each layer by one ratio
(its default, local pruning), the classifier kept. Torch-Pruning keeps ``int(size · (1 − ratio))``
channels of a layer where fxprune keeps ``size − floor(ratio · size)``; each convolution gets the
ratio that makes the two agree, so both prune the same number of channels from every group and
reach the same MACs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from fxprune.choose.plan import kept_count

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
                                  pruning_ratio_dict=_matching_ratios(model, ratio), ignored_layers=[model.fc])
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def _matching_ratios(model, ratio: float) -> dict:
    """Per convolution, the Torch-Pruning ratio under which it keeps as many channels as fxprune's ``ratio``."""
    return {m: 1 - (kept_count(m.out_channels, ratio, 1) + 0.5) / m.out_channels
            for m in model.modules() if isinstance(m, torch.nn.Conv2d)}


def prune(model, example, ratio: float, kind: str, calibration) -> torch.nn.Module:
    return _prune(model, example, ratio, kind, calibration)
