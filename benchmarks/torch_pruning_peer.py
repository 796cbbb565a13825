"""Torch-Pruning 1.6.1, the peer of the latency, speed and quality benchmarks (``pip install -e ".[bench]"``).

One ``prune`` serves them all; its options say what each compares against:

* latency (``prune_to_macs``): the L1 magnitude of each layer (``importance="l1"``), one ratio for
  every layer, kept counts rounded to ``round_to``, the layers producing the logits kept, attention
  heads kept whole; the peer's ratio is searched until its MACs are within ``MACS_TOLERANCE`` of
  fxprune's (both counted by the same FLOP counter), since speedups compare fairly only at equal work.
* quality: ``GroupMagnitudeImportance(p=2)`` (``importance="l2"``) or ``GroupTaylorImportance``
  (``importance="taylor"``, gradients of the cross-entropy over the calibration batches), local
  pruning, the classifier kept (``keep=("fc",)``), ``round_to=None`` and ``fxprune_counts=True``:
  Torch-Pruning keeps ``int(size · (1 − ratio))`` channels of a layer where fxprune keeps
  ``size − floor(ratio · size)``, so each convolution gets the ratio that makes the two agree; both
  then prune the same number of channels from every group and reach the same MACs.

Without Torch-Pruning installed, ``available()`` says so and the benchmarks leave the peer out.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F

from fxprune.choose.plan import kept_count
from fxprune.graph.measure import count_macs

MACS_TOLERANCE = 0.03
SEARCH_STEPS = 4
IMPORTANCES = ("l1", "l2", "taylor")


def available() -> tuple[bool, str]:
    """Whether Torch-Pruning is installed, and if not a line saying that its column is left out."""
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


def _matching_ratios(model: torch.nn.Module, ratio: float) -> dict:
    """Per convolution, the Torch-Pruning ratio under which it keeps as many channels as fxprune's ``ratio``."""
    return {m: 1 - (kept_count(m.out_channels, ratio, 1) + 0.5) / m.out_channels
            for m in model.modules() if isinstance(m, torch.nn.Conv2d)}


def _importance(kind: str):
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    raise ValueError(f"importance {kind!r}: one of {IMPORTANCES}")


def pruner(model: torch.nn.Module, example: torch.Tensor, ratio: float, ignored_layers: list, *,
           importance: str = "l1", round_to: int | None = 8, fxprune_counts: bool = False):
    """Torch-Pruning's dependency graph of ``model`` (built here) and its pruner; ``step()`` prunes in place.

    Attention heads are kept whole (``num_heads``); ``fxprune_counts``: each convolution keeps as many
    channels as fxprune keeps at ``ratio`` (with ``round_to=1``).
    """
    import torch_pruning as tp

    heads = {m: m.num_heads for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)}
    return tp.pruner.MetaPruner(
        model, example, importance=_importance(importance), pruning_ratio=ratio,
        pruning_ratio_dict=_matching_ratios(model, ratio) if fxprune_counts else None,
        ignored_layers=ignored_layers, round_to=round_to, num_heads=heads)


def prune(model: torch.nn.Module, example: torch.Tensor, ratio: float, *, importance: str = "l1",
          round_to: int | None = 8, keep: Sequence[str] | None = None, fxprune_counts: bool = False,
          calibration: Iterable | None = None) -> torch.nn.Module:
    """A pruned copy of ``model`` (in eval mode), ``ratio`` per layer (see ``pruner``).

    ``keep``: names of the modules left whole (default: the layers producing the logits, found by
    running ``example``). ``calibration``: (inputs, labels) batches, for ``importance="taylor"``.
    """
    model = copy.deepcopy(model).eval()
    ignored = output_layers(model, example) if keep is None else [model.get_submodule(name) for name in keep]
    if importance == "taylor":
        model.zero_grad()
        for xb, yb in calibration:
            F.cross_entropy(model(xb), yb).backward()
    pruner(model, example, ratio, ignored, importance=importance, round_to=round_to,
           fxprune_counts=fxprune_counts).step()
    model.zero_grad(set_to_none=True)
    _fix_attributes(model)
    return model.eval()


def prune_to_macs(model: torch.nn.Module, example: torch.Tensor, target_macs: int,
                  start_ratio: float, round_to: int = 8) -> tuple[torch.nn.Module, float]:
    """Search the L1 peer's ratio until its MACs match ``target_macs``; return the model and the ratio.

    MACs of a uniformly pruned net fall roughly as (1 - ratio)², so each step rescales the kept
    fraction by the square root of the MACs still to gain.
    """
    ratio, best = start_ratio, None
    for _ in range(SEARCH_STEPS):
        pruned = prune(model, example, ratio, round_to=round_to if round_to > 1 else None)
        macs = count_macs(pruned, (example,))
        error = macs / target_macs - 1
        if best is None or abs(error) < abs(best[2]):
            best = (pruned, ratio, error)
        if abs(error) <= MACS_TOLERANCE:
            break
        ratio = min(0.95, max(0.0, 1 - (1 - ratio) * (target_macs / macs) ** 0.5))
    return best[0], best[1]
