"""Find the coupled channels of a traced, shape-annotated graph.

Every node's rule relates slots of the tensors it touches; slots related directly or through a
chain of rules form one *channel* (a connected component). A channel can be removed when it
contains a slot of some parameter (so removing it saves something) and no frozen slot. Channels
that touch the same tensors the same way form a ``ChannelGroup``: a criterion ranks the channels
of a group against each other, and a plan removes some of them.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import torch.fx

from ..errors import InputError
from ..graph.shapes import tensor_shapes
from ..graph.tensors import DimRef, canonical_names, output_key, param_key
from ..rules import Freeze, NodeView, Observe, Tie, describe_key, find_rule, rule_key
from ..rules.joins import tuple_position
from .grouping import ChannelGroup, FrozenGroup, build_groups
from .slots import SlotTable


@dataclass
class Analysis:
    gm: torch.fx.GraphModule
    table: SlotTable
    labels: np.ndarray  # component id of every slot
    groups: list[ChannelGroup]
    frozen: list[FrozenGroup]
    mixing_norms: list[str] = field(default_factory=list)  # nodes whose statistics mix pruned channels


def _touched(view: NodeView) -> list[str]:
    """Tensor keys a node reads or writes (what its rule must account for)."""
    node = view.node
    keys: list[str] = []
    position = tuple_position(node) if node.op == "call_function" and node.target is operator.getitem else None
    if position is not None:  # one element of a tuple: only it is read (none when it holds no tensor)
        if (position,) in tensor_shapes(node.args[0]):
            keys.append(output_key(node.args[0], (position,)))
    else:
        for arg in node.all_input_nodes:
            keys += [output_key(arg, path) for path in tensor_shapes(arg)]
    if node.op != "output":
        keys += [output_key(node, path) for path in tensor_shapes(node)]
    if node.op == "call_module":
        keys += view.module_params()
    return [k for k in keys if k in view.table.shapes]


def node_relations(view: NodeView) -> list:
    """The rule's relations for one node, with every unmentioned dim frozen (what a rule test checks)."""
    key = view.rule_key
    rule = find_rule(key)
    relations = list(rule.couple(view)) if rule else []
    mentioned = set()
    for rel in relations:
        mentioned.update((rel.a, rel.b) if isinstance(rel, Tie) else (rel.at,))
    if rule is None:
        reason = f"no rule for {describe_key(key)} (node {view.name})"
    else:
        reason = f"node {view.name} ({describe_key(key)}) does not keep this dim's channels apart"
    for tensor in _touched(view):
        relations += [Freeze(ref, reason) for ref in view.dims(tensor) if ref not in mentioned]
    return relations


class _Collector:
    """Turns relations into slot edges and frozen slots, as numpy arrays."""

    def __init__(self, table: SlotTable):
        self.table = table
        self.edges_a: list[np.ndarray] = []
        self.edges_b: list[np.ndarray] = []
        self.reasons: list[str] = []
        self.frozen_slots: list[np.ndarray] = []
        self.frozen_reason: list[np.ndarray] = []

    def tie(self, rel: Tie) -> bool:
        size_a, size_b = self.table.size[rel.a], self.table.size[rel.b]
        if rel.a_index is None and size_a != size_b:
            self.freeze(rel.a, f"sizes {size_a} and {size_b} do not match at {rel.b}")
            self.freeze(rel.b, f"sizes {size_a} and {size_b} do not match at {rel.a}")
            return False
        self.edges_a.append(self.table.slots(rel.a, rel.a_index))
        self.edges_b.append(self.table.slots(rel.b, rel.b_index))
        return rel.a_index is None

    def freeze(self, ref: DimRef, reason: str, index=None) -> None:
        slots = self.table.slots(ref, index)
        self.frozen_slots.append(slots)
        self.frozen_reason.append(np.full(len(slots), len(self.reasons)))
        self.reasons.append(f"{ref}: {reason}")


def _collect(gm, table, aliases, extra_frozen) -> _Collector:
    collector = _Collector(table)
    group_axes: set[DimRef] = set()
    for node in gm.graph.nodes:
        view = NodeView(node, gm, table, aliases, group_axes)
        for rel in node_relations(view):
            if isinstance(rel, Tie):
                if collector.tie(rel) and (rel.a in group_axes or rel.b in group_axes):
                    group_axes.update((rel.a, rel.b))
            elif isinstance(rel, Freeze):
                collector.freeze(rel.at, rel.reason, rel.index)
            elif not isinstance(rel, Observe):
                raise TypeError(f"rule for node {node.name} returned {rel!r}")
    for ref, why in extra_frozen.items():
        if ref in table.offset:
            collector.freeze(ref, why)
    return collector


def _components(table: SlotTable, collector: _Collector) -> np.ndarray:
    a = np.concatenate(collector.edges_a) if collector.edges_a else np.zeros(0, np.int64)
    b = np.concatenate(collector.edges_b) if collector.edges_b else np.zeros(0, np.int64)
    graph = scipy.sparse.coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(table.total, table.total))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    return labels


def ignored_freezes(gm: torch.fx.GraphModule, table: SlotTable, ignore) -> dict[DimRef, str]:
    """Freeze every dim of every parameter of the modules the user asked to keep."""
    names = dict(gm.named_modules())
    frozen: dict[DimRef, str] = {}
    for name in ignore:
        if name not in names:
            raise InputError(f"ignore: no module named {name!r} in the model; "
                             f"names look like {', '.join(list(names)[1:4])}")
        for param_name, _ in names[name].named_parameters(prefix=name):
            key = param_key(canonical_names(gm).get(param_name, param_name))
            for dim in range(len(table.shapes.get(key, ()))):
                frozen[DimRef(key, dim)] = f"module {name} is in ignore"
    return frozen


def analyze_graph(gm: torch.fx.GraphModule, ignore=(), extra_frozen: dict[DimRef, str] | None = None) -> Analysis:
    """Group the coupled channels of ``gm`` (whose nodes carry shapes from ``propagate_shapes``)."""
    table = SlotTable.from_graph(gm)
    aliases = canonical_names(gm)
    frozen_dims = dict(extra_frozen or {})
    frozen_dims.update(ignored_freezes(gm, table, ignore))
    collector = _collect(gm, table, aliases, frozen_dims)
    labels = _components(table, collector)

    groups, frozen = build_groups(table, labels, collector)
    analysis = Analysis(gm, table, labels, groups, frozen)
    analysis.mixing_norms = _mixing_norms(analysis)
    return analysis


def _mixing_norms(analysis: Analysis) -> list[str]:
    """Nodes whose statistics span prunable channels (their rule's ``normalizes``): the oracle is inexact there."""
    prunable = np.zeros(analysis.labels.max() + 1 if len(analysis.labels) else 0, bool)
    for group in analysis.groups:
        prunable[group.channels] = True
    found = []
    aliases = canonical_names(analysis.gm)
    for node in analysis.gm.graph.nodes:
        rule = find_rule(rule_key(node, analysis.gm))
        if rule is None or rule.normalizes is None:
            continue
        view = NodeView(node, analysis.gm, analysis.table, aliases)
        refs = [view.dim(view.out(), d) for d in rule.normalizes(view)]
        if any(prunable[analysis.labels[analysis.table.slots(ref)]].any() for ref in refs):
            found.append(node.name)
    return found
