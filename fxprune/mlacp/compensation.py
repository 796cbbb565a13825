"""A closed-form start for MLACP's refinement: least squares on each consumer's kept inputs.

A few SGD steps move the kept weights only a little; the reconstruction term they minimise has,
for a plain conv or linear consumer, an exact minimiser (the least-squares refit of CP / ThiNet /
CaP). Starting the SGD steps from it lets them spend their budget on what has no closed form:
the Gram and classification terms, and the layers between the group's producer and consumers.
"""

from __future__ import annotations

from ..refit import plain_layer, refit_layer
from .masks import ChannelMasks


def least_squares_start(gm, site, masks: ChannelMasks, batches, features) -> int:
    """Refit the kept input columns of the group's plain consumers to the baseline outputs; return how many."""
    done = 0
    for node in site.consumers:
        if node.op != "call_module" or not plain_layer(gm.get_submodule(node.target)):
            continue
        name = f"{node.target}.weight"
        mask = masks.masks.get(name)
        if mask is None or node.name not in features[0]:
            continue
        columns = mask.transpose(0, 1).reshape(mask.shape[1], -1).any(1).nonzero().flatten().numpy()
        refit_layer(gm, node, gm.get_submodule(node.target), columns, batches, [f[node.name] for f in features])
        masks.apply([name])
        done += 1
    return done


__all__ = ["least_squares_start"]
