"""Model size and cost: parameter counts and MACs from torch's own FLOP counter."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, inputs: tuple) -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (FLOPs / 2, as torch counts them)."""
    counter = FlopCounterMode(display=False)
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:  # the counter's module tracker fails on a parameter that requires grad under no_grad
        p.requires_grad_(False)
    try:
        with counter, torch.no_grad():
            model(*inputs)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return counter.get_total_flops() // 2
