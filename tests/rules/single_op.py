"""Rule-level testing: one op in a graph of its own, and questions about the channels its rule ties.

    case = single_op(nn.Conv2d(3, 5, 3), torch.randn(1, 3, 8, 8))
    assert case.same_channels(("a", 1), ("param:op.weight", 1))     # input channels = weight columns
    assert case.same_channels(("op", 1), ("param:op.weight", 0))    # output channels = weight rows
    assert case.apart(("a", 1), ("op", 1))

Tensor inputs become placeholders named ``a``, ``b``, ``c`` … (other arguments stay literals); the op
is the node ``op``: a module (``call_module``), a method name (``call_method`` on ``a``) or a
function. Tensor keys are those of the analysis: ``"op"``, ``"op#0"`` for element 0 of a tuple
output, ``"param:op.weight"`` for a module's parameter. The graph's own inputs and outputs are
frozen (they are the caller's), but the components — which slots are one channel — are computed all
the same, and that is what the rule decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import ascii_lowercase

import numpy as np
import torch
import torch.fx

from fxprune.analysis.analyze import Analysis, analyze_graph, node_relations
from fxprune.graph.shapes import record_shapes
from fxprune.graph.tensors import DimRef, canonical_names
from fxprune.rules import Freeze, NodeView, Tie, rule_for

Dim = tuple[str, int]


@dataclass
class SingleOp:
    analysis: Analysis
    node: torch.fx.Node

    @property
    def rule(self):
        return rule_for(self.node, self.analysis.gm)

    def labels(self, dim: Dim) -> np.ndarray:
        ref = DimRef(dim[0], dim[1] % len(self.analysis.table.shapes[dim[0]]))
        return self.analysis.labels[self.analysis.table.slots(ref)]

    def same_channels(self, a: Dim, b: Dim, a_index=None, b_index=None) -> bool:
        """Slot ``a_index[k]`` of ``a`` is one channel with slot ``b_index[k]`` of ``b`` (all slots by default)."""
        la, lb = self.labels(a), self.labels(b)
        la = la if a_index is None else la[np.asarray(a_index)]
        lb = lb if b_index is None else lb[np.asarray(b_index)]
        return len(la) == len(lb) and bool((la == lb).all())

    def apart(self, a: Dim, b: Dim) -> bool:
        """No slot of ``a`` is one channel with any slot of ``b``."""
        return not np.intersect1d(self.labels(a), self.labels(b)).size

    def relations(self) -> list:
        """The op's own relations (its rule's, with every dim it leaves unmentioned frozen)."""
        gm = self.analysis.gm
        return node_relations(NodeView(self.node, gm, self.analysis.table, canonical_names(gm)))

    def frozen(self, dim: Dim) -> list[str]:
        """Why the op itself freezes ``dim`` (empty when it does not)."""
        ref = DimRef(dim[0], dim[1] % len(self.analysis.table.shapes[dim[0]]))
        return [rel.reason for rel in self.relations() if isinstance(rel, Freeze) and rel.at == ref]

    def ties(self) -> list[Tie]:
        return [rel for rel in self.relations() if isinstance(rel, Tie)]


def single_op(op, *args, **kwargs) -> SingleOp:
    """Build ``op(*args, **kwargs)`` as a one-node graph, record its shapes and analyze it."""
    root = torch.nn.Module()
    graph = torch.fx.Graph()
    names = iter(ascii_lowercase)
    tensors = []

    def placeholder(value):
        if isinstance(value, torch.Tensor):
            tensors.append(value)
            return graph.placeholder(next(names))
        if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
            return type(value)(placeholder(v) for v in value)
        return value

    node_args = tuple(placeholder(a) for a in args)
    node_kwargs = {k: placeholder(v) for k, v in kwargs.items()}
    if isinstance(op, torch.nn.Module):
        root.add_module("op", op)
        node = graph.call_module("op", node_args, node_kwargs)
    elif isinstance(op, str):
        node = graph.call_method(op, node_args, node_kwargs)
    else:
        node = graph.call_function(op, node_args, node_kwargs)
    node.name = "op"
    graph.output(node)
    gm = torch.fx.GraphModule(root, graph)
    gm.eval()
    record_shapes(gm, tuple(tensors))
    return SingleOp(analyze_graph(gm), node)
