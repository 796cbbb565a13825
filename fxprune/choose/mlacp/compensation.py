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
from ..refit import drawn_rows, plain_layer, refit_from_rows, rows_per_batch
from .masks import ChannelMasks

MAX_KEPT_VALUES = 2**26  # a consumer's rows (or inputs) kept for later refits: at most 256 MiB of floats


def _fixed_inputs(site, position: dict) -> set[str]:
    """The consumers whose input no other consumer of the site computes: it stays the same while the
    group's consumers are refit (the group's producer is not changed then)."""
    consumers = set(site.consumers)
    fixed = set()
    for node in site.consumers:
        seen, stack, found = set(), list(node.all_input_nodes), False
        while stack and not found:
            current = stack.pop()
            if current in seen or position[current] < site.first_node:
                continue
            seen.add(current)
            found = current in consumers
            stack.extend(current.all_input_nodes)
        if not found:
            fixed.add(node.name)
    return fixed


def _row_values(module, values: list) -> int:
    """How many numbers the drawn rows of ``values`` hold (an upper bound: every batch at its row cap)."""
    return len(values) * rows_per_batch(len(values)) * (module.weight[0].numel() + module.weight.shape[0])


def _kept(module, values: list, originals: list, rows):
    """What a later refit of a fixed input reads again: the drawn rows when they fit in
    ``MAX_KEPT_VALUES``, else the inputs themselves (smaller than their patches: a 3×3 convolution's
    rows hold nine values per input value), from which the same rows are drawn again."""
    if _row_values(module, values) <= MAX_KEPT_VALUES:
        kept = list(rows)
        return lambda: kept
    if sum(v.numel() for v in values) <= MAX_KEPT_VALUES:
        return lambda: drawn_rows(module, values, originals)
    return None


def least_squares_start(gm, site, masks: ChannelMasks, batches, features, prefixes, cache: dict | None = None) -> int:
    """Refit the kept input columns of the group's plain consumers to the baseline outputs; return how many.

    Consumers go in graph order, each refit seeing the ones before it; their inputs come from the
    group's ``prefixes`` moved forward from one consumer to the next. ``cache`` (one dict per group)
    keeps the drawn rows (or the inputs, ``_kept``) of the consumers whose input the refits do not
    change, so the refits between selection rounds solve again without running the model.
    """
    position = {n: i for i, n in enumerate(gm.graph.nodes)}
    fixed = _fixed_inputs(site, position) if cache is not None else set()
    inputs = None
    done = 0
    for node in site.consumers:
        if not plain_layer(gm, node):
            continue
        name = f"{node.target}.weight"
        mask = masks.masks.get(name)
        if mask is None or node.name not in features[0]:
            continue
        columns = mask.transpose(0, 1).reshape(mask.shape[1], -1).any(1).nonzero().flatten().cpu().numpy()
        module = gm.get_submodule(node.target)
        originals = [f[node.name] for f in features]
        if node.name in fixed and node.name in cache:
            refit_from_rows(module, columns, cache[node.name]())
        else:
            if inputs is None:
                inputs = Prefixes(gm, [batch.inputs for batch in batches], site.first_node, prefixes)
            values = [env[node.args[0].name] for env in inputs.at(position[node])]
            rows = drawn_rows(module, values, originals)
            keep = _kept(module, values, originals, rows) if node.name in fixed else None
            if keep is not None:
                cache[node.name] = keep
                rows = keep()
            refit_from_rows(module, columns, rows)
        masks.apply([name])
        done += 1
    return done


__all__ = ["least_squares_start"]
