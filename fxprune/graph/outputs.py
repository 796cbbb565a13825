"""Comparing what two models return, whatever the structure of their outputs."""

from __future__ import annotations

import torch


def flat_outputs(value) -> list[torch.Tensor]:
    """Every tensor in a model's output (a tensor, or tuples, lists and dicts of them), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in flat_outputs(item)]
    return []


def compare(pruned: torch.nn.Module, reference: torch.nn.Module, inputs: tuple) -> tuple[float, float]:
    """Largest absolute difference between the two models' outputs, and the reference's scale."""
    with torch.no_grad():
        got, want = flat_outputs(pruned(*inputs)), flat_outputs(reference(*inputs))
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        shapes = [tuple(g.shape) for g in got], [tuple(w.shape) for w in want]
        raise AssertionError(f"output shapes differ: {shapes[0]} vs {shapes[1]}")
    diff = max(float((g - w).abs().max()) for g, w in zip(got, want))
    scale = max(float(w.abs().max()) for w in want)
    return diff, scale
