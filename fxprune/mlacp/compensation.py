"""A closed-form start for MLACP's refinement: least squares on each consumer's kept inputs.

A few SGD steps move the kept weights only a little; the reconstruction term they minimise has,
for a plain conv or linear consumer, an exact minimiser (the least-squares refit of CP / ThiNet /
CaP). Starting the SGD steps from it lets them spend their budget on what has no closed form:
the Gram and classification terms, and the layers between the group's producer and consumers.

The refit is ``fxprune.refit``'s (same rows, same ridge); only the consumer's inputs are computed
from the group's prefix (``capture.Prefixes``) instead of from the model's input.
"""

from __future__ import annotations

import numpy as np
import torch

from ..refit import ROWS_PER_BATCH, _patches, _solve, _targets, plain_layer
from .capture import Prefixes
from .masks import ChannelMasks


def least_squares_start(gm, site, masks: ChannelMasks, batches, features, prefixes) -> int:
    """Refit the kept input columns of the group's plain consumers to the baseline outputs; return how many.

    Consumers go in graph order, each refit seeing the ones before it; their inputs come from the
    group's ``prefixes`` moved forward from one consumer to the next.
    """
    position = {n: i for i, n in enumerate(gm.graph.nodes)}
    inputs = Prefixes(gm, [batch.inputs for batch in batches], site.first_node, prefixes)
    done = 0
    for node in site.consumers:
        if node.op != "call_module" or not plain_layer(gm.get_submodule(node.target)):
            continue
        name = f"{node.target}.weight"
        mask = masks.masks.get(name)
        if mask is None or node.name not in features[0]:
            continue
        columns = mask.transpose(0, 1).reshape(mask.shape[1], -1).any(1).nonzero().flatten().numpy()
        source = node.args[0].name
        values = [env[source] for env in inputs.at(position[node])]
        _refit_columns(gm.get_submodule(node.target), columns, values, [f[node.name] for f in features])
        masks.apply([name])
        done += 1
    return done


def _refit_columns(module, columns: np.ndarray, inputs, originals: list[torch.Tensor]) -> None:
    """``refit.refit_layer`` on given inputs: the same random rows per batch, the same solution."""
    kernel = int(np.prod(module.weight.shape[2:])) if module.weight.dim() > 2 else 1
    wanted = (torch.as_tensor(columns)[:, None] * kernel + torch.arange(kernel)).reshape(-1)
    xtx, xty = 0, 0
    generator = torch.Generator().manual_seed(0)
    for x, original in zip(inputs, originals):
        with torch.no_grad():
            patches, targets = _patches(module, x), _targets(module, original)
        pick = torch.randperm(len(patches), generator=generator)[:ROWS_PER_BATCH]
        rows, targets = patches[pick][:, wanted].double(), targets[pick].double()
        xtx, xty = xtx + rows.T @ rows, xty + rows.T @ targets
    _solve(module, xtx, xty, columns)


__all__ = ["least_squares_start"]
