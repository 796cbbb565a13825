"""Run part of a GraphModule and keep the values of chosen nodes.

Layer-wise methods run the model many times per group. Everything before the group's first node
is the same on every run, so it is computed once (``prefix_values``: the values that later nodes
read) and each later run starts from there (``run_from``); a run may also stop at the last node
whose value it needs. Gradients then flow only into the group and the layers after it.

Groups go from the input to the output and each changes only weights at or after its own first
node, so ``Prefixes`` moves the computed prefix forward from one group's start to the next instead
of running the model from its input again: the prefixes of all groups together cost one forward pass.
"""

from __future__ import annotations

import torch
import torch.fx


class _Stop(Exception):
    pass


class _PartialRun(torch.fx.Interpreter):
    """An Interpreter that skips the nodes before ``start``, keeps ``wanted`` values, stops after ``stop``."""

    def __init__(self, gm, start: int, wanted: set[str], stop: int | None):
        super().__init__(gm, garbage_collect_values=True)
        self.position = {n: i for i, n in enumerate(gm.graph.nodes)}
        self.start, self.wanted, self.stop = start, wanted, stop
        self.kept: dict[str, object] = {}

    def run_node(self, node):
        index = self.position[node]
        if index < self.start:  # not needed after the start: the frontier was given in the environment
            return None
        value = super().run_node(node)
        if node.name in self.wanted:
            self.kept[node.name] = value
        if self.stop is not None and index >= self.stop:
            raise _Stop
        return value


def frontier(gm: torch.fx.GraphModule, start: int) -> list[torch.fx.Node]:
    """Nodes before position ``start`` whose values some node at or after ``start`` reads."""
    nodes = list(gm.graph.nodes)
    later = set(nodes[start:])
    return [n for n in nodes[:start] if any(u in later for u in n.users)]


def run_from(gm: torch.fx.GraphModule, inputs: tuple, start: int = 0, env: dict | None = None,
             wanted=(), stop: int | None = None) -> dict[str, object]:
    """Run ``gm`` from node position ``start`` (``env`` holds the frontier) and return the wanted values.

    ``wanted`` names nodes; the model's output is kept under ``"output"``.
    """
    runner = _PartialRun(gm, start, set(wanted), stop)
    nodes = {n.name: n for n in gm.graph.nodes}
    initial = {nodes[name]: value for name, value in (env or {}).items()}
    try:
        runner.kept["output"] = runner.run(*inputs, initial_env=initial)
    except _Stop:
        pass
    return runner.kept


def prefix_values(gm: torch.fx.GraphModule, inputs: tuple, start: int) -> dict[str, object]:
    """The values of ``frontier(gm, start)`` on ``inputs``, computed without gradients."""
    if start == 0:
        return {}
    needed = frontier(gm, start)
    with torch.no_grad():
        kept = run_from(gm, inputs, 0, None, {n.name for n in needed}, stop=start - 1)
    return {n.name: kept[n.name] for n in needed if n.name in kept}


class Prefixes:
    """``prefix_values`` of every batch at a start position that only moves forward.

    Valid while the weights that change between two calls are read only at or after the earlier
    start (layer-wise methods): moving from ``start`` to a later one runs just the nodes in between.

    >>> prefixes = Prefixes(gm, [batch.inputs for batch in batches])  # doctest: +SKIP
    >>> envs = prefixes.at(12)                                         # doctest: +SKIP
    """

    def __init__(self, gm: torch.fx.GraphModule, inputs: list[tuple], start: int = 0, values=None):
        self.gm, self.inputs = gm, inputs
        self.start = start  # ``values``: the prefixes at ``start`` when it is not the model's input
        self.values: list[dict[str, object]] = list(values) if values is not None else [{} for _ in inputs]

    def at(self, start: int) -> list[dict[str, object]]:
        """The frontier values at ``start`` for every batch (``start`` never below the previous one)."""
        if start < self.start:
            raise ValueError(f"Prefixes: start {start} is before the previous start {self.start}")
        if start > self.start:
            needed = {n.name for n in frontier(self.gm, start)}
            with torch.no_grad():
                self.values = [self._advance(inputs, env, start, needed)
                               for inputs, env in zip(self.inputs, self.values)]
            self.start = start
        return self.values

    def _advance(self, inputs: tuple, env: dict, start: int, needed: set[str]) -> dict[str, object]:
        kept = run_from(self.gm, inputs, self.start, env, needed, stop=start - 1)
        return {name: kept[name] if name in kept else env[name] for name in needed if name in kept or name in env}


class _Watching(_PartialRun):
    """A whole run in which the ``wanted`` values are points gradients can be taken at."""

    def run_node(self, node):
        value = super().run_node(node)
        if node.name in self.wanted and isinstance(value, torch.Tensor) and value.is_floating_point():
            value = value + torch.zeros((), dtype=value.dtype, device=value.device, requires_grad=True)
            self.kept[node.name] = value
        return value


def output_gradients(gm: torch.fx.GraphModule, inputs: tuple, names: set[str], loss_of) -> dict[str, torch.Tensor]:
    """``∂ loss_of(output) / ∂ value`` for every named node, on one batch: one forward and one backward
    of the whole graph, whatever the number of nodes (the total derivative: through every path)."""
    runner = _Watching(gm, 0, set(names), None)
    with torch.enable_grad():
        loss = loss_of(runner.run(*inputs))
        watched = {name: value for name, value in runner.kept.items() if value.requires_grad}
        found = torch.autograd.grad(loss, list(watched.values()), allow_unused=True) if watched else []
    return {name: (g if g is not None else torch.zeros_like(v)).detach()
            for (name, v), g in zip(watched.items(), found)}
