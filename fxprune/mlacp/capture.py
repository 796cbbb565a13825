"""Run part of a GraphModule and keep the values of chosen nodes.

Layer-wise methods run the model many times per group. Everything before the group's first node
is the same on every run, so it is computed once (``prefix_values``: the values that later nodes
read) and each later run starts from there (``run_from``); a run may also stop at the last node
whose value it needs. Gradients then flow only into the group and the layers after it.
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
