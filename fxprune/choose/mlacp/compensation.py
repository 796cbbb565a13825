"""A closed-form start for MLACP's refinement: least squares on each consumer's kept inputs.

A few SGD steps move the kept weights only a little; the reconstruction term they minimise has,
for a plain conv or linear consumer, an exact minimiser (the least-squares refit of CP / ThiNet /
CaP). Starting the SGD steps from it lets them spend their budget on what has no closed form:
the Gram and classification terms, and the layers between the group's producer and consumers.

The refit is ``fxprune.refit``'s (same rows, same ridge); only the consumer's inputs are computed
from the group's prefix (``capture.Prefixes``) instead of from the model's input.
"""

from __future__ import annotations

from ...graph.partial_run import Prefixes
from ..refit import plain_layer, refit_columns
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
        if not plain_layer(gm, node):
            continue
        name = f"{node.target}.weight"
        mask = masks.masks.get(name)
        if mask is None or node.name not in features[0]:
            continue
        columns = mask.transpose(0, 1).reshape(mask.shape[1], -1).any(1).nonzero().flatten().numpy()
        source = node.args[0].name
        values = [env[source] for env in inputs.at(position[node])]
        refit_columns(gm.get_submodule(node.target), columns, values, [f[node.name] for f in features])
        masks.apply([name])
        done += 1
    return done


__all__ = ["least_squares_start"]
