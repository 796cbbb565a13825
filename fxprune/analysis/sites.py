"""Where a channel group sits in the graph: its parameters, the nodes that consume it, its place in order.

Layer-wise methods (MLACP, the least-squares refit) judge a group by the feature maps of its
*consumers*: the nodes that read one of the group's parameters but whose own output does not carry
the group's channels. For ``conv1 -> bn1 -> relu -> conv2`` the group of conv1's filters holds
conv1's rows, bn1's entries and conv2's input columns; conv1's and bn1's outputs carry the channels,
conv2's output does not, so conv2 is the consumer and its output is the feature map that matters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx

from ..graph.shapes import tensor_shapes
from ..graph.tensors import DimRef, canonical_names, output_key, param_key, param_name
from ..rules import rule_for
from .analyze import Analysis
from .grouping import ChannelGroup, Member


@dataclass
class GroupSite:
    """One group's place in the graph, as layer-wise methods need it."""

    group: ChannelGroup
    name: str  # the anchor parameter, for messages
    first_node: int  # position of the earliest node that touches the group
    consumers: list[torch.fx.Node]  # nodes whose outputs judge the group
    consumer_members: list[Member]  # the parameter slices that read the group's channels
    params: list[str]  # qualified names of the parameters (not buffers) holding the group's slots
    # per consumer, the dim of its output that holds its own output channels (1 for a convolution,
    # the last for a linear layer on tokens): where a Gram matrix is taken
    channel_dims: dict[str, int] = field(default_factory=dict)
    # per consumer (same order), the node whose output the layer-wise losses compare: the consumer, or
    # the op right after it that scales each channel by a constant (``judged_node``)
    judged: list[torch.fx.Node] = field(default_factory=list)


def param_readers(gm: torch.fx.GraphModule) -> dict[str, list[torch.fx.Node]]:
    """For every parameter or buffer key, the nodes that compute with it."""
    aliases = canonical_names(gm)
    readers: dict[str, list[torch.fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            names = [f"{node.target}.{n}" if node.target else n
                     for n, _ in [*module.named_parameters(), *module.named_buffers()]]
            for name in names:
                readers.setdefault(param_key(aliases.get(name, name)), []).append(node)
        elif node.op == "get_attr":
            key = param_key(aliases.get(node.target, node.target))
            readers.setdefault(key, []).extend(node.users)
    return readers


def group_sites(analysis: Analysis) -> list[GroupSite]:
    """A site for every group of ``analysis``, ordered from the model's input to its output."""
    gm = analysis.gm
    nodes = list(gm.graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    key_owner = {output_key(n, p): n for n in nodes for p in tensor_shapes(n)}
    readers = param_readers(gm)
    sites = [_site(group, analysis, position, key_owner, readers) for group in analysis.groups]
    return sorted(sites, key=lambda s: (s.first_node, s.group.id))


def _site(group, analysis, position, key_owner, readers) -> GroupSite:
    carriers = {key_owner[m.ref.key] for m in group.members if m.ref.key in key_owner}
    members = group.params(analysis.table)
    touching = set(carriers)
    consumers, consumer_members = [], []
    for member in members:
        for node in readers.get(member.ref.key, []):
            touching.add(node)
            if node not in carriers:
                consumer_members.append(member)
                if node not in consumers:
                    consumers.append(node)
    consumers.sort(key=position.__getitem__)
    anchor = (members or group.members)[0].ref
    weights = {node: m.ref.key for m in consumer_members for node in readers.get(m.ref.key, [])}
    judged = [judged_node(analysis.gm, node) for node in consumers]
    dims = {node.name: _output_channel_dim(analysis, node, weights[node]) for node in consumers}
    return GroupSite(
        group=group,
        name=f"{param_name(anchor.key)} dim {anchor.dim}",
        first_node=min((position[n] for n in touching), default=0),
        consumers=consumers,
        consumer_members=consumer_members or members,
        params=sorted({param_name(m.ref.key) for m in members}),
        channel_dims={**dims, **{j.name: dims[n.name] for n, j in zip(consumers, judged)}},
        judged=judged,
    )


def judged_node(gm: torch.fx.GraphModule, node: torch.fx.Node) -> torch.fx.Node:
    """Where a layer's error is measured: after the per-channel affine op that alone reads its output
    (a BatchNorm in inference, its rule's ``channel_affine``), else at the layer itself.

    A convolution's output channels differ in scale; the norm after it puts them on one. The next
    layers read every channel on that scale, so an error of one unit matters as much in each of them
    there, not in the convolution's own output, where a channel of small variance counts for little.
    """
    if len(node.users) != 1:
        return node
    (user,) = node.users
    rule = rule_for(user, gm)
    if rule is None or rule.channel_affine is None or user.op != "call_module":
        return node
    return user if rule.channel_affine(gm.get_submodule(user.target)) else node


def _output_channel_dim(analysis: Analysis, node: torch.fx.Node, weight_key: str) -> int:
    """The dim of ``node``'s output tied to the rows of the weight it reads (1 when none is)."""
    table, labels = analysis.table, analysis.labels
    rows = DimRef(weight_key, 0)
    key = output_key(node)
    if rows not in table.offset or key not in table.shapes:
        return 1
    component = labels[table.offset[rows]]
    for dim in range(len(table.shapes[key])):
        ref = DimRef(key, dim)
        if table.size[ref] == table.size[rows] and labels[table.offset[ref]] == component:
            return dim
    return 1
