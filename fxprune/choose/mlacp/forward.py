"""Forward selection: a group's channels chosen chunk by chunk, each scored where the losses can see it.

A present channel's sensitivity ``Σ (w · ∂L/∂w)²`` is taken where the reconstruction and Gram terms
sit at their minimum (their gradient is zero there), so it ranks channels by the cross-entropy
alone. An absent channel's gradient is live. With the input columns of the group's consumers at zero
for the absent channels (each is still computed, but no layer reads it: a gate at 0), the derivative
of the joint loss with respect to the gate of channel ``j``, carrying its weights ``W_j``, is

    ∂L/∂g_j = Σ over the consumer columns of j of  W_j · ∂L/∂W_j,

the first-order change of the loss from reading channel ``j`` again. Forward selection (DCP's greedy
procedure, the paper's reference [11]) starts with no channel read, reads again the chunk whose
gates lower the loss most, refits the read columns (least squares), and scores the rest against
what the chosen ones already reconstruct, until ``keep`` are read: orthogonal matching pursuit, for
the joint loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

from ...analysis.analyze import Analysis
from ...analysis.sites import GroupSite
from ...graph.distributed import all_reduce_sum
from ...graph.tensors import param_name
from .masks import ChannelMasks


def _per_slot_sum(tensor: torch.Tensor, dim: int) -> np.ndarray:
    """The signed sum over every dim but ``dim``: one value per index along it."""
    return tensor.detach().double().transpose(0, dim).reshape(tensor.shape[dim], -1).sum(1).cpu().numpy()


def _gate_gains(site: GroupSite, weights: dict[str, torch.Tensor], originals: dict[str, torch.Tensor],
                losses: Iterable[torch.Tensor]) -> np.ndarray:
    """``-∂L/∂g_j`` for every channel of the group: how much reading it again would lower the loss."""
    names = list(weights)
    grads = [torch.zeros_like(w) for w in weights.values()]
    for loss in losses:
        if loss.requires_grad:
            found = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
            grads = [g + f if f is not None else g for g, f in zip(grads, found)]
    for grad in grads:
        all_reduce_sum(grad)  # the sums over every rank's batches
    gains = np.zeros(site.group.size)
    for member in site.consumer_members:
        name = param_name(member.ref.key)
        product = originals[name] * grads[names.index(name)]
        gains -= _per_slot_sum(product, member.ref.dim)[member.index].sum(axis=1)
    return gains


def forward_select(analysis: Analysis, site: GroupSite, keep: int, rounds: int,
                   losses: Callable[[], Iterable[torch.Tensor]], refit: Callable[[ChannelMasks], None]) -> np.ndarray:
    """Choose ``keep`` channels of ``site``'s group in ``rounds`` chunks; scores whose top ``keep`` they are.

    ``losses()``: the joint loss on every calibration batch, in the model's present state (the group's
    weights requiring gradients). ``refit(gate)``: the least-squares refit of the consumers' read
    columns, ``gate`` naming the columns not read. On return the consumers' columns hold their
    values from before the selection (the caller removes the unchosen channels and refines).
    """
    gm = analysis.gm
    weights = {name: gm.get_parameter(name) for name in sorted({param_name(m.ref.key) for m in site.consumer_members})}
    originals = {name: w.detach().clone() for name, w in weights.items()}
    gate = ChannelMasks(analysis)
    absent = np.arange(site.group.size)
    gate.remove(site.group, absent, site.consumer_members)
    chunk = max(1, math.ceil(keep / max(rounds, 1)))
    scores = np.zeros(site.group.size)
    chosen = 0
    while chosen < keep:
        gains = _gate_gains(site, weights, originals, losses())
        if not np.isfinite(gains).all():
            raise FloatingPointError(f"the gate gradients of group {site.name} are not finite")
        take = absent[np.argsort(-gains[absent], kind="stable")[: min(chunk, keep - chosen)]]
        rank = np.arange(chosen, chosen + len(take))
        scores[take] = 2.0 + (site.group.size - rank)  # above every channel not chosen, in the order chosen
        gate.restore(site.consumer_members, take, originals)
        absent, chosen = np.setdiff1d(absent, take), chosen + len(take)
        if chosen < keep:
            refit(gate)
    if len(absent):  # the unchosen in the order of their last gains, all below 1
        spread = np.ptp(gains[absent])
        scores[absent] = 0.5 * (gains[absent] - gains[absent].min()) / (spread if spread > 0 else 1.0)
    with torch.no_grad():
        for name, weight in weights.items():
            weight.copy_(originals[name])
    return scores
