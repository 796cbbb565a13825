"""Reconstruction importance (ThiNet / CP style): how much of its consumers' output a channel makes.

A channel's score is the energy, on the calibration data, of its contribution to the output of
every conv or linear layer that reads it: ``Σ ‖W[:, j] * x_j‖²``. Removing the channels that
contribute least changes the next layers' outputs least; ``compress`` then refits those layers'
kept weights by least squares (``fxprune.refit``), as CP and ThiNet do, because this criterion
asks for it (``refit_after``). Consumers that are neither a plain conv nor a linear layer count
by their weights' squared magnitude.

Under ``torch.distributed`` each rank measures the energies on up to ``MAX_SAMPLES`` samples of its
own shard and the energies are summed over the ranks (the weight magnitudes are not: every rank
holds the same weights), so the ranking equals one process's on all the ranks' samples together
when those are at most ``MAX_SAMPLES``; beyond that the ranks together measure more samples than one
process would.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...analysis.analyze import Analysis
from ...analysis.sites import group_sites
from ...graph.distributed import all_reduce_sum, is_main
from ...graph.partial_run import run_from
from ...graph.tensors import param_key, param_name
from ...rules.base import canonical_target
from .magnitude import per_index

MAX_SAMPLES = 32  # the per-channel contributions of a layer take samples × in × out maps


def _column_energy(module, x: torch.Tensor) -> torch.Tensor | None:
    """Energy of each input column's contribution to the layer's output (None: not a conv/linear)."""
    weight = module.weight.detach()
    if isinstance(module, torch.nn.Linear):
        return _linear_energy(weight, x)
    if isinstance(module, torch.nn.Conv2d) and module.groups == 1 and not isinstance(module.padding, str):
        channels = weight.shape[1]
        split = weight.transpose(0, 1).reshape(-1, 1, *weight.shape[2:])  # (in · out, 1, k, k)
        out = F.conv2d(x, split, None, module.stride, module.padding, module.dilation, groups=channels)
        return out.pow(2).reshape(x.shape[0], channels, -1).sum((0, 2))
    return None


def _linear_energy(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).pow(2).sum(0) * weight.detach().pow(2).sum(0)


def _consumer_inputs(analysis: Analysis, sites, batches) -> dict[str, list[torch.Tensor]]:
    """The input of every consumer layer, batch by batch (their lengths may differ: token batches of
    several sequence lengths), over at most ``MAX_SAMPLES`` calibration samples."""
    wanted = {n.args[0].name for s in sites for n in s.consumers if n.args and hasattr(n.args[0], "name")}
    found: dict[str, list[torch.Tensor]] = {}
    seen = 0
    with torch.no_grad():
        for batch in batches:
            kept = run_from(analysis.gm, batch.inputs, wanted=wanted)
            for name in wanted:
                if isinstance(kept.get(name), torch.Tensor):
                    found.setdefault(name, []).append(kept[name][:MAX_SAMPLES - seen])
            seen += batch.size
            if seen >= MAX_SAMPLES:
                break
    return found


def _reader_energy(node: torch.fx.Node, gm: torch.fx.GraphModule, key: str, inputs: list[torch.Tensor]):
    """The energy of each input column of ``node`` when it is a conv or linear layer whose weight is the
    parameter ``key``, read along its input dim; else None. A module (FX) or ``F.linear`` on a weight
    read by name (``torch.export``'s ``aten.linear``)."""
    if node.op == "call_module" and param_key(f"{node.target}.weight") == key:
        energies = [_column_energy(gm.get_submodule(node.target), x) for x in inputs]
    elif (node.op == "call_function" and canonical_target(node) is F.linear and len(node.args) > 1
          and getattr(node.args[1], "op", None) == "get_attr" and param_key(node.args[1].target) == key):
        weight = gm.get_parameter(node.args[1].target)
        energies = [_linear_energy(weight, x) for x in inputs]
    else:
        return None
    return None if any(e is None for e in energies) else sum(energies)


def _energies(analysis: Analysis, site, inputs: dict[str, list[torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """(data-driven energy, weight-magnitude fallback) per channel of the site's group."""
    gm = analysis.gm
    measured, fallback = np.zeros(site.group.size), np.zeros(site.group.size)
    for member in site.consumer_members:
        energy = None
        if member.ref.dim == 1:
            for node in site.consumers:
                if node.args and getattr(node.args[0], "name", None) in inputs:
                    energy = _reader_energy(node, gm, member.ref.key, inputs[node.args[0].name])
                    if energy is not None:
                        break
        if energy is not None:
            measured += energy.double().cpu().numpy()[member.index].sum(axis=1)
        else:
            weight = per_index(gm.get_parameter(param_name(member.ref.key)), member.ref.dim, 2)
            fallback += np.asarray(weight, dtype=np.float64)[member.index].sum(axis=1)
    return measured, fallback


def reconstruction(analysis: Analysis, batches) -> list[np.ndarray]:
    sites = group_sites(analysis)
    inputs = _consumer_inputs(analysis, sites, batches)
    bar = tqdm(sites, desc="reconstruction", disable=not is_main(), leave=False)  # as MLACP shows its own
    parts = {site.group.id: _energies(analysis, site, inputs) for site in bar}
    ids = list(parts)
    measured = all_reduce_sum(torch.as_tensor(np.concatenate([parts[i][0] for i in ids] or [np.zeros(0)])))
    split = np.split(measured.numpy(), np.cumsum([len(parts[i][0]) for i in ids])[:-1]) if ids else []
    scores = {i: energy + parts[i][1] for i, energy in zip(ids, split)}
    return [scores[group.id] for group in analysis.groups]


reconstruction.refit_after = True
