"""The three losses of MLACP, each scale-free so that one α and one β suit every layer.

For a consumer's feature map F (N samples × C channels × P positions) of the baseline (``base``)
and of the model being pruned (``pruned``):

* reconstruction: ``‖F_b − F_p‖² / ‖F_b‖²`` — the paper's ``‖F_b − F_p‖² / 2N``, divided by the
  baseline's energy so that a layer with large activations does not drown the others;
* correlation: the channel Gram ``F Fᵀ`` (C×C) and the spatial Gram ``Fᵀ F`` (P×P) of each
  sample, each compared as ``‖G_b − G_p‖² / ‖G_b‖²`` (so their scale does not matter);
* classification: cross-entropy of the pruned model's output on the batch's labels (the baseline's
  own predictions when the data has none).

The spatial Gram is P×P (3136×3136 for a 56×56 map), too large to build per sample: both distances
are computed from products on the smaller side (``gram_loss``), the baseline's once per batch.
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


def as_maps(feature: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """(N, ..., C, ...) → (N, C, P), the channels taken from ``channel_dim``; (N, C) is a map with one position."""
    if feature.dim() <= 2:
        return feature.reshape(feature.shape[0], -1, 1)
    return feature.movedim(channel_dim, 1).flatten(2)


def reconstruction_loss(base: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    return (base - pruned).pow(2).sum() / base.pow(2).sum().clamp_min(1e-12)


@dataclass
class GramReference:
    """The baseline's side of the Gram comparison at one consumer on one batch, computed once.

    ``maps`` is A (N, C, P); ``inner`` is the smaller of A Aᵀ (C×C) and Aᵀ A (P×P) per sample, and
    ``energy`` its squared norm, the same for both (‖AAᵀ‖ = ‖AᵀA‖).
    """

    maps: torch.Tensor
    inner: torch.Tensor
    energy: torch.Tensor
    channels_side: bool  # True: ``inner`` is C×C

    @classmethod
    def of(cls, feature: torch.Tensor, channel_dim: int = 1) -> "GramReference":
        a = as_maps(feature.detach(), channel_dim)
        channels_side = a.shape[1] <= a.shape[2]
        inner = a @ a.transpose(1, 2) if channels_side else a.transpose(1, 2) @ a
        return cls(a, inner, inner.double().pow(2).sum().clamp_min(1e-24), channels_side)


def gram_loss(reference: GramReference, pruned: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """The channel Gram distance plus the spatial one, each ``‖G_b − G_p‖² / ‖G_b‖²`` (Grams per sample).

    Both come from products on the smaller side S (C or P) only: the Gram of that side directly, the
    other through ``‖AᵀA − BᵀB‖² = ‖AAᵀ‖² − 2‖ABᵀ‖² + ‖BBᵀ‖²`` (and its transpose); the baseline's
    products are the reference's. Two S×S products a call: N·S²·max(C, P) multiply-adds each.
    """
    a, b = reference.maps, as_maps(pruned, channel_dim)
    if reference.channels_side:
        cross, own = a @ b.transpose(1, 2), b @ b.transpose(1, 2)
    else:
        cross, own = a.transpose(1, 2) @ b, b.transpose(1, 2) @ b
    direct = (reference.inner - own).double().pow(2).sum()
    other = (reference.energy - 2 * cross.double().pow(2).sum() + own.double().pow(2).sum()).clamp_min(0)
    return ((direct + other) / reference.energy).to(pruned.dtype)


def classification_loss(outputs, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    return F.cross_entropy(logits_of(outputs), labels, reduction=reduction)


def local_classification(gradients: dict[str, torch.Tensor], base: dict[str, torch.Tensor],
                         pruned: dict[str, torch.Tensor], consumers: list[str], samples: int) -> torch.Tensor:
    """The cross-entropy's change from the baseline's to second order, at the consumers' outputs:
    ``mean_n ½ (Σ_c ⟨g_nc, F_p − F_b⟩_n)²``, with ``g_nc`` sample ``n``'s gradient of its cross-entropy
    at the baseline's output of consumer ``c`` (the empirical Fisher, one backward pass a batch for the
    whole model). The first-order term is left out: at a trained baseline it is noise, and fitting it
    on a few calibration images would fit their labels rather than keep the model. ``samples``: the
    batch size (a token layer's output may hold its rows as (samples · tokens, channels))."""
    total = None
    for name in consumers:
        if name in gradients:
            change = (gradients[name] * (pruned[name] - base[name])).reshape(samples, -1).sum(1)
            total = change if total is None else total + change
    return pruned[consumers[0]].new_zeros(()) if total is None else 0.5 * total.pow(2).mean()


def loss_parts(base: dict[str, torch.Tensor], pruned: dict[str, torch.Tensor], consumers: list[str],
               outputs, labels, references: dict[str, GramReference] | None, with_classification: bool,
               channel_dims: dict[str, int] | None = None) -> LossParts:
    """The three losses, averaged over the group's consumers (the terms not asked for are zero);
    the Gram term is computed when ``references`` (the baseline's side, per consumer) are given."""
    zero = pruned[consumers[0]].new_zeros(()) if consumers else torch.zeros(())
    recon, gram = zero, zero
    for name in consumers:
        recon = recon + reconstruction_loss(base[name], pruned[name])
        if references is not None:
            gram = gram + gram_loss(references[name], pruned[name], (channel_dims or {}).get(name, 1))
    count = max(len(consumers), 1)
    cls = classification_loss(outputs, labels) if with_classification else zero
    return LossParts(recon / count, gram / count, cls)
