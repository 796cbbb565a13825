"""The peer column: Torch-Pruning 1.6.1 pruning the same model down to the same MACs as fxprune.

Comparing speedups is fair only at equal work, so the peer's ratio is searched until its MACs
are within ``MACS_TOLERANCE`` of fxprune's (both counted by the same FLOP counter). Install with
``pip install -e ".[bench]"``; without it the column is left out with a line saying so.
"""

from __future__ import annotations

import copy

import torch

from fxprune.graph.measure import count_macs

MACS_TOLERANCE = 0.03
SEARCH_STEPS = 4


def available() -> tuple[bool, str]:
    try:
        import torch_pruning  # noqa: F401
    except ImportError:
        return False, "torch-pruning column skipped: not installed (pip install -e \".[bench]\")"
    return True, ""


def output_layers(model: torch.nn.Module, example: torch.Tensor) -> list[torch.nn.Module]:
    """The layers that produce the logits: their output channels are the classes and must stay."""
    with torch.no_grad():
        classes = model(example).shape[1]
    return [m for m in model.modules()
            if getattr(m, "out_features", None) == classes or getattr(m, "out_channels", None) == classes]


def _fix_attributes(model: torch.nn.Module) -> None:
    """Torch-Pruning shrinks weights but not every attribute a forward reads (ViT's hidden_dim, heads)."""
    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention):
            module.head_dim = module.embed_dim // module.num_heads
        if hasattr(module, "hidden_dim") and hasattr(module, "conv_proj"):
            module.hidden_dim = module.conv_proj.out_channels


def prune(model: torch.nn.Module, example: torch.Tensor, ratio: float, round_to: int | None = 8) -> torch.nn.Module:
    """Torch-Pruning's L1 magnitude pruner, uniform ``ratio`` per layer, classifier kept."""
    model = copy.deepcopy(model).eval()
    magnitude_pruner(model, example, ratio, output_layers(model, example), round_to).step()
    _fix_attributes(model)
    return model


def magnitude_pruner(model: torch.nn.Module, example: torch.Tensor, ratio: float, ignored_layers: list,
                     round_to: int | None = 8):
    """Torch-Pruning's dependency graph of ``model`` (built here) and its L1 pruner; ``step()`` prunes in place."""
    import torch_pruning as tp

    heads = {m: m.num_heads for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    return tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        ignored_layers=ignored_layers, round_to=round_to, num_heads=heads)


def prune_to_macs(model: torch.nn.Module, example: torch.Tensor, target_macs: int,
                  start_ratio: float, round_to: int = 8) -> tuple[torch.nn.Module, float]:
    """Search the peer's ratio until its MACs match ``target_macs``; return the model and the ratio.

    MACs of a uniformly pruned net fall roughly as (1 - ratio)², so each step rescales the kept
    fraction by the square root of the MACs still to gain.
    """
    ratio, best = start_ratio, None
    for _ in range(SEARCH_STEPS):
        pruned = prune(model, example, ratio, round_to if round_to > 1 else None)
        macs = count_macs(pruned, (example,))
        error = macs / target_macs - 1
        if best is None or abs(error) < abs(best[2]):
            best = (pruned, ratio, error)
        if abs(error) <= MACS_TOLERANCE:
            break
        ratio = min(0.95, max(0.0, 1 - (1 - ratio) * (target_macs / macs) ** 0.5))
    return best[0], best[1]
