"""Least-squares refit of the layers that lost input channels (pruning compensation, as in CP/ThiNet/CaP).

After channels are removed, each conv or linear layer that read them sees fewer inputs. Its kept
weights are refit so that its output on the calibration data matches the original model's output
at the same layer as closely as possible in least squares:

    W_kept = argmin ‖Y_original − W · X_pruned‖²   (X: the layer's input in the pruned model,
                                                   unfolded into patches for a convolution)

Layers go from the input to the output, so each refit sees the earlier refits. It runs on the
masked full-size model (removed channels zeroed), before the rewrite slices it; grouped
convolutions and functional layers are left as they are.

Under ``torch.distributed`` each rank sums ``XᵀX`` and ``XᵀY`` over its own batches and the sums are
added over the ranks before solving, so every rank writes the same weights. Rows are drawn from each
batch with a generator seeded by the rank (rank 0 draws as one process does): the result equals one
process's on all the ranks' batches only where no draw cuts rows, i.e. each batch has at most
``rows_per_batch`` rows (batch × output positions for a convolution) for both batch counts.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..analysis.analyze import Analysis
from ..graph.distributed import all_reduce_sum, rank
from ..graph.inputs import Batch
from ..graph.partial_run import prefix_values, run_from
from ..graph.tensors import DimRef, canonical_names, param_key, param_name
from ..rules import rule_for
from .plan import Plan, kept_slots, removed_components

ROWS = 32768  # rows a refit reads over all its batches: 14 per unknown of a 3×3 conv reading 256 channels
MIN_ROWS_PER_BATCH = 1024
RIDGE = 1e-3


def rows_per_batch(batches: int) -> int:
    """How many rows a refit draws from each of ``batches`` batches (8192 each for 4, 4096 for 8)."""
    return max(MIN_ROWS_PER_BATCH, ROWS // max(batches, 1))


def _zero_removed(analysis: Analysis, kept: dict[DimRef, np.ndarray]) -> None:
    gm, table = analysis.gm, analysis.table
    with torch.no_grad():
        for ref, keep in kept.items():
            if ref.key in table.param_keys and ref.key not in table.buffer_keys:
                tensor = gm.get_parameter(param_name(ref.key))
                gone = np.setdiff1d(np.arange(table.size[ref]), keep)
                tensor.index_fill_(ref.dim, torch.as_tensor(gone, device=tensor.device), 0.0)


def plain_layer(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    """A layer the refit can solve for (its rule's ``refit`` fact: linear layers, ungrouped 2-d convolutions)."""
    if node.op != "call_module":
        return False
    rule = rule_for(node, gm)
    return rule is not None and rule.refit is not None and rule.refit(gm.get_submodule(node.target))


def _refittable(analysis: Analysis, kept: dict[DimRef, np.ndarray]):
    """(node, module, kept input channels) for each plain conv/linear layer that lost inputs."""
    aliases = canonical_names(analysis.gm)
    for node in analysis.gm.graph.nodes:
        if not plain_layer(analysis.gm, node):
            continue
        module = analysis.gm.get_submodule(node.target)
        name = f"{node.target}.weight"
        columns = kept.get(DimRef(param_key(aliases.get(name, name)), 1))
        if columns is not None and len(columns):
            yield node, module, columns


def _patches(module, x: torch.Tensor) -> torch.Tensor:
    """Rows of the layer's input that multiply its weight: (rows, in_channels · kernel)."""
    if isinstance(module, torch.nn.Linear):
        return x.reshape(-1, x.shape[-1])
    if isinstance(module.padding, str) or module.padding_mode != "zeros":
        raise ValueError("padding mode not supported by the refit")
    cols = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _targets(module, y: torch.Tensor) -> torch.Tensor:
    if module.bias is not None:
        shape = [1, -1] + [1] * (y.dim() - 2) if isinstance(module, torch.nn.Conv2d) else [-1]
        y = y - module.bias.detach().reshape(shape)
    return y.reshape(-1, y.shape[-1]) if isinstance(module, torch.nn.Linear) else y.flatten(2).transpose(1, 2).reshape(
        -1, y.shape[1])


def _solve(module, xtx: torch.Tensor, xty: torch.Tensor, columns: np.ndarray) -> None:
    """Write the ridge-regularised least-squares solution into the kept input columns."""
    ridge = RIDGE * xtx.diagonal().mean().clamp_min(1e-12)
    identity = torch.eye(len(xtx), dtype=xtx.dtype, device=xtx.device)
    solution = torch.linalg.solve(xtx + ridge * identity, xty)  # (inputs, outputs)
    weight = module.weight
    with torch.no_grad():
        new = solution.T.reshape(weight.shape[0], len(columns), *weight.shape[2:]).to(weight.dtype)
        weight.index_copy_(1, torch.as_tensor(columns, device=weight.device), new)


def _wanted(module, columns: np.ndarray) -> torch.Tensor:
    """The rows of the normal equations that hold input ``columns`` (each with its kernel taps)."""
    kernel = int(np.prod(module.weight.shape[2:])) if module.weight.dim() > 2 else 1
    return (torch.as_tensor(columns)[:, None] * kernel + torch.arange(kernel)).reshape(-1)


def drawn_rows(module, inputs: Iterable[torch.Tensor], originals: list[torch.Tensor]):
    """Yield, batch by batch, the rows every refit reads: ``(patches, targets)``, ``rows_per_batch`` at most.

    The same rows are drawn from every batch whatever the caller (seed: the rank, 0 in one process),
    so the refit after a criterion and MLACP's least-squares start give the same solution on the
    same inputs, and rows kept once serve every later refit of the same inputs.
    """
    generator = torch.Generator().manual_seed(rank())
    most = rows_per_batch(len(originals))
    for x, original in zip(inputs, originals):
        with torch.no_grad():  # closed before each yield: the caller's grad mode is its own
            patches, targets = _patches(module, x), _targets(module, original)
            pick = torch.randperm(len(patches), generator=generator)[:most]
            rows = patches[pick], targets[pick]
        yield rows


def refit_from_rows(module, columns: np.ndarray, rows: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Refit ``module``'s input ``columns`` by least squares on ``rows`` (``drawn_rows``), the sums of
    ``XᵀX`` and ``XᵀY`` added over the ranks."""
    wanted = _wanted(module, columns)
    xtx, xty = 0, 0
    with torch.no_grad():
        for patches, targets in rows:
            x, y = patches[:, wanted].double(), targets.double()
            xtx, xty = xtx + x.T @ x, xty + x.T @ y
    _solve(module, all_reduce_sum(xtx), all_reduce_sum(xty), columns)


def refit_columns(module, columns: np.ndarray, inputs: Iterable[torch.Tensor], originals: list[torch.Tensor]) -> None:
    """Refit ``module``'s input ``columns`` so that its outputs on ``inputs`` (one per batch) match ``originals``."""
    refit_from_rows(module, columns, drawn_rows(module, inputs, originals))


def refit_layer(gm, node, module, columns, batches: list[Batch], originals: list[torch.Tensor]) -> None:
    """Refit ``module``'s input ``columns`` so its output on ``batches`` matches ``originals``."""
    start = list(gm.graph.nodes).index(node)
    source = node.args[0].name
    inputs = (prefix_values(gm, batch.inputs, start)[source] for batch in batches)  # one batch at a time
    refit_columns(module, columns, inputs, originals)


def refit(analysis: Analysis, plan: Plan, batches: list[Batch]) -> int:
    """Zero the plan's channels in ``analysis.gm`` and refit every layer that lost inputs; return how many."""
    kept = kept_slots(analysis, removed_components(analysis, plan))
    if not kept:
        return 0
    gm = analysis.gm
    layers = list(_refittable(analysis, kept))
    with torch.no_grad():
        originals = [run_from(gm, b.inputs, wanted={n.name for n, _, _ in layers}) for b in batches]
    _zero_removed(analysis, kept)
    for node, module, columns in layers:
        refit_layer(gm, node, module, columns, batches, [o[node.name] for o in originals])
        _zero_removed(analysis, kept)
    return len(layers)
