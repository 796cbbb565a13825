"""The three losses of MLACP, each scale-free so that one α and one β suit every layer.

For a consumer's feature map F (N samples × C channels × P positions) of the baseline (``base``)
and of the model being pruned (``pruned``):

* reconstruction: ``‖F_b − F_p‖² / ‖F_b‖²`` — the paper's ``‖F_b − F_p‖² / 2N``, divided by the
  baseline's energy so that a layer with large activations does not drown the others;
* correlation: the channel Gram ``F Fᵀ / P`` (C×C) and the spatial Gram ``Fᵀ F / C`` (P×P) of
  each sample, each compared as ``‖G_b − G_p‖² / ‖G_b‖²``;
* classification: cross-entropy of the pruned model's output on the batch's labels (the baseline's
  own predictions when the data has none).

The spatial Gram is P×P (1024×1024 for a 32×32 map), too large to build per sample; its distance
is computed from C×C products instead: ``‖AᵀA − BᵀB‖² = ‖AAᵀ‖² − 2‖ABᵀ‖² + ‖BBᵀ‖²``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...graph.outputs import logits_of

TERMS = ("reconstruction", "gram", "classification")
DEFAULT_TERMS = ("reconstruction", "gram")  # MLACP's default: see its docstring


@dataclass
class LossParts:
    reconstruction: torch.Tensor
    gram: torch.Tensor
    classification: torch.Tensor

    def joint(self, alpha: float, beta: float, terms) -> torch.Tensor:
        """``L_R + α·L_G + β·L_C``, with only the ``terms`` asked for."""
        zero = self.reconstruction * 0
        total = self.reconstruction if "reconstruction" in terms else zero
        if "gram" in terms:
            total = total + alpha * self.gram
        if "classification" in terms:
            total = total + beta * self.classification
        return total


def _as_maps(feature: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) → (N, C, P); a (N, C) output is a map with one position."""
    return feature.flatten(2) if feature.dim() > 2 else feature.unsqueeze(-1)


def reconstruction_loss(base: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    return (base - pruned).pow(2).sum() / base.pow(2).sum().clamp_min(1e-12)


def channel_gram_loss(base: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    a, b = _as_maps(base), _as_maps(pruned)
    positions = a.shape[-1]
    gram_a, gram_b = a @ a.transpose(1, 2) / positions, b @ b.transpose(1, 2) / positions
    return (gram_a - gram_b).pow(2).sum() / gram_a.pow(2).sum().clamp_min(1e-12)


def spatial_gram_loss(base: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    a, b = _as_maps(base).double(), _as_maps(pruned).double()
    aa = (a @ a.transpose(1, 2)).pow(2).sum()
    ab = (a @ b.transpose(1, 2)).pow(2).sum()
    bb = (b @ b.transpose(1, 2)).pow(2).sum()
    return ((aa - 2 * ab + bb).clamp_min(0) / aa.clamp_min(1e-12)).float()


def classification_loss(outputs, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits_of(outputs), labels, reduction=reduction)


def local_classification(gradients: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
                         pruned: dict[str, torch.Tensor], consumers: list[str]) -> torch.Tensor:
    """The cross-entropy's change from the baseline's to second order, at the consumers' outputs:
    ``mean_n ½ (Σ_c ⟨g_nc, F_p − F_b⟩_n)²``, with ``g_nc`` sample ``n``'s gradient of its cross-entropy
    at the baseline's output of consumer ``c`` (the empirical Fisher, one backward pass a batch for the
    whole model). The first-order term is left out: at a trained baseline it is noise, and fitting it
    on a few calibration images would fit their labels rather than keep the model."""
    total = None
    for name in consumers:
        if name in gradients:
            change = (gradients[name] * (pruned[name] - base[name])).flatten(1).sum(1)
            total = change if total is None else total + change
    return pruned[consumers[0]].new_zeros(()) if total is None else 0.5 * total.pow(2).mean()


def loss_parts(base: dict[str, torch.Tensor], pruned: dict[str, torch.Tensor], consumers: list[str],
               outputs, labels, with_gram: bool, with_classification: bool) -> LossParts:
    """The three losses, averaged over the group's consumers (the terms not asked for are zero)."""
    zero = pruned[consumers[0]].new_zeros(()) if consumers else torch.zeros(())
    recon, gram = zero, zero
    for name in consumers:
        recon = recon + reconstruction_loss(base[name], pruned[name])
        if with_gram:
            gram = gram + channel_gram_loss(base[name], pruned[name]) + spatial_gram_loss(base[name], pruned[name])
    count = max(len(consumers), 1)
    cls = classification_loss(outputs, labels) if with_classification else zero
    return LossParts(recon / count, gram / count, cls)
