"""Rule tests for ``fxprune.rules.graph_nodes``: graph inputs and outputs, parameter reads, size and rank reads.

Inputs and outputs are the caller's and stay whole; a parameter read is the parameter; a size read only
observes a dim while the size feeds shapes, and freezes it once the size is used as a value.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from single_op import SingleOp, single_op
from torch import nn

from fxprune.analysis.analyze import analyze_graph
from fxprune.graph.tensors import DimRef, canonical_names, param_key
from fxprune.pipeline import traced
from fxprune.rules import Freeze, Observe, Tie

RULES = ("attribute_read", "graph_input", "graph_output", "parameter_read", "rank_read", "size_method")

UNTIED = "does not keep this dim's channels apart"  # the reason a dim left unmentioned by a rule is frozen
AS_VALUE = "its size is used as a value at node"


def traced_case(model: nn.Module, *inputs, node: str) -> SingleOp:
    """``model`` traced and analyzed, with ``node`` as the op whose relations ``SingleOp`` reports."""
    gm = traced(model.eval(), inputs)
    return SingleOp(analyze_graph(gm), next(n for n in gm.graph.nodes if n.name == node))


def prunable(case: SingleOp, dim) -> bool:
    """Every slot of ``dim`` belongs to a channel some group may remove."""
    channels = np.concatenate([g.channels for g in case.analysis.groups] or [np.zeros(0, np.int64)])
    return bool(np.isin(case.labels(dim), channels).all())


def observed_dims(case: SingleOp) -> set:
    return {tuple(rel.at) for rel in case.relations() if isinstance(rel, Observe)}


class Convs(nn.Module):
    """conv(3 -> 7) then ``between(h)`` then conv(7 -> 5): the 7 channels are prunable unless ``between`` says no."""

    def __init__(self, between):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 7, 1), nn.Conv2d(7, 5, 1)
        self.between = between

    def forward(self, x):
        return self.b(self.between(self.a(x)))


IMAGE = torch.randn(1, 3, 5, 5)


# ----- graph_input

def test_graph_input_freezes_every_dim_with_its_name_and_ties_nothing():
    case = single_op(torch.relu, torch.randn(3, 5, 7))
    placeholder = SingleOp(case.analysis, next(n for n in case.analysis.gm.graph.nodes if n.op == "placeholder"))
    assert placeholder.rule.name == "graph_input"
    relations = placeholder.relations()
    assert all(isinstance(rel, Freeze) for rel in relations)
    assert {tuple(rel.at) for rel in relations} == {("a", 0), ("a", 1), ("a", 2)}
    for dim in range(3):
        assert placeholder.frozen(("a", dim)) == ["input of the graph (a)"]
    assert placeholder.frozen(("op", 1)) == []  # the op's own output is not the input's to freeze


def test_graph_input_holding_a_tuple_freezes_each_element():
    class Pair(nn.Module):
        def forward(self, pair):
            return pair[0] + pair[1]

    case = traced_case(Pair(), (torch.randn(3, 5), torch.randn(3, 5)), node="pair")
    assert case.rule.name == "graph_input"
    for key in ("pair#0", "pair#1"):
        for dim in range(2):
            assert case.frozen((key, dim)) == ["input of the graph (pair)"]


# ----- graph_output

def test_graph_output_freezes_every_returned_tensor():
    class TwoOut(nn.Module):
        def forward(self, x):
            return x.relu(), x.sum(1)

    case = traced_case(TwoOut(), torch.randn(3, 5, 7), node="output")
    assert case.rule.name == "graph_output"
    for dim in range(3):
        assert case.frozen(("relu", dim)) == ["output of the graph"]
    for dim in range(2):
        assert case.frozen(("sum_1", dim)) == ["output of the graph"]
    assert case.ties() == []


def test_graph_output_does_not_freeze_what_the_graph_computes_on_the_way():
    case = traced_case(Convs(nn.Identity()), IMAGE, node="output")
    assert case.frozen(("a", 1)) == []
    assert any("output of the graph" in reason for reason in case.frozen(("b", 1)))
    assert prunable(case, ("a", 1))
    assert not prunable(case, ("b", 1))


def test_graph_output_of_a_tuple_valued_node_is_frozen_all_the_same():
    # the rule sees only single tensors; the pieces of a returned split are frozen as unmentioned dims
    class Pieces(nn.Module):
        def forward(self, x):
            return torch.split(x, [3, 2], dim=1)

    case = traced_case(Pieces(), torch.randn(3, 5, 7), node="output")
    for key in ("split#0", "split#1"):
        for dim in range(3):
            assert any(UNTIED in reason for reason in case.frozen((key, dim))), (key, dim)


# ----- parameter_read

class WeightProduct(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(7, 5))

    def forward(self, x):
        return x @ self.weight


def test_parameter_read_ties_each_dim_to_the_same_dim_of_the_parameter():
    case = traced_case(WeightProduct(), torch.randn(3, 7), node="weight")
    assert case.rule.name == "parameter_read"
    assert case.relations() == [Tie(DimRef("weight", 0), DimRef("param:weight", 0)),
                                Tie(DimRef("weight", 1), DimRef("param:weight", 1))]
    assert case.same_channels(("param:weight", 0), ("x", 1))       # through the matmul's contraction
    assert case.same_channels(("param:weight", 1), ("matmul", 1))


def test_parameter_read_does_not_cross_the_parameters_dims():
    case = traced_case(WeightProduct(), torch.randn(3, 7), node="weight")
    assert case.apart(("weight", 0), ("param:weight", 1))
    assert case.apart(("weight", 1), ("param:weight", 0))
    assert case.frozen(("weight", 0)) == [] and case.frozen(("weight", 1)) == []


def test_parameter_read_of_a_shared_parameter_ties_to_the_key_its_module_uses():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(7, 5)
            self.tied = self.lin.weight  # one parameter under two names

        def forward(self, x):
            return self.lin(x) + x @ self.tied.t()

    case = traced_case(Shared(), torch.randn(3, 7), node="tied")
    key = param_key(canonical_names(case.analysis.gm)["lin.weight"])
    assert {tuple(t.b) for t in case.ties()} == {(key, 0), (key, 1)}
    assert case.same_channels(("tied", 0), ("lin", 1))  # the read's rows are the linear's outputs
    assert case.same_channels(("tied", 1), ("x", 1))


# ----- size_method

def test_size_read_that_only_feeds_a_view_observes_and_keeps_channels_prunable():
    case = traced_case(Convs(lambda h: h.view(h.size(0), h.size(1), -1).view(h.shape)), IMAGE, node="size_1")
    assert case.rule.name == "size_method"
    assert case.node.args[1] == 1
    assert observed_dims(case) == {("a", 0), ("a", 1), ("a", 2), ("a", 3)}
    assert case.ties() == [] and case.frozen(("a", 1)) == []
    assert prunable(case, ("a", 1))


def test_size_passed_through_scalar_arithmetic_into_a_reshape_is_still_only_observed():
    def between(h):
        c = h.size(1)
        return torch.reshape(h, (h.size(0), c * h.size(2) // h.size(2), -1)).reshape(h.shape)

    case = traced_case(Convs(between), IMAGE, node="size")
    assert case.node.args[1] == 1
    assert case.frozen(("a", 1)) == []
    assert prunable(case, ("a", 1))


def test_size_used_as_a_value_freezes_that_dim_and_names_the_node():
    case = traced_case(Convs(lambda h: h * h.size(1)), IMAGE, node="size")
    assert case.frozen(("a", 1)) == [f"{AS_VALUE} mul"]
    for dim in (0, 2, 3):  # the dims it does not read stay observed
        assert case.frozen(("a", dim)) == []
    assert not prunable(case, ("a", 1))


def test_whole_size_read_freezes_only_the_dims_it_indexes_into_values():
    def between(h):
        s = h.size()
        return h + torch.arange(s[1]).view(1, -1, 1, 1).to(h.dtype) + s[2]

    case = traced_case(Convs(between), IMAGE, node="size")
    reasons = {dim: case.frozen(("a", dim)) for dim in range(4)}
    assert len(reasons[1]) == 1 and reasons[1][0].startswith(AS_VALUE) and "arange" in reasons[1][0]
    assert len(reasons[2]) == 1 and reasons[2][0].startswith(AS_VALUE)
    assert reasons[0] == [] and reasons[3] == []


def test_size_returned_from_the_graph_freezes_that_dim():
    class ReturnsSize(nn.Module):
        def forward(self, x):
            return x.relu(), x.size(1)

    case = traced_case(ReturnsSize(), torch.randn(3, 5, 7), node="size")
    assert case.frozen(("relu", 1)) == [] and case.frozen(("x", 1)) == [f"{AS_VALUE} output"]


def test_size_used_as_the_fill_value_of_torch_full_freezes_that_dim():
    class Filled(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 7, 1), nn.Conv2d(7, 5, 1)

        def forward(self, x):
            h = self.a(x)
            return self.b(h), torch.full((1,), h.size(1))  # the second output's value is 7

    case = traced_case(Filled(), IMAGE, node="size")
    assert case.frozen(("a", 1)) != []


# ----- attribute_read

def test_shape_attribute_feeding_a_reshape_observes_every_dim():
    case = traced_case(Convs(lambda h: h.reshape(h.shape[0], h.shape[1], -1).reshape(h.shape)), IMAGE, node="getattr_1")
    assert case.rule.name == "attribute_read"
    assert case.node.args[1] == "shape"
    assert observed_dims(case) == {("a", 0), ("a", 1), ("a", 2), ("a", 3)}
    assert all(case.frozen(("a", dim)) == [] for dim in range(4))
    assert prunable(case, ("a", 1))


def test_shape_attribute_sliced_into_an_interpolate_freezes_only_the_sliced_dims():
    def between(h):
        return h + F.interpolate(h[:, :, :1, :1], size=h.shape[-2:])

    case = traced_case(Convs(between), IMAGE, node="getattr_1")
    assert case.frozen(("a", 2)) == [f"{AS_VALUE} interpolate"]
    assert case.frozen(("a", 3)) == [f"{AS_VALUE} interpolate"]
    assert case.frozen(("a", 0)) == [] and case.frozen(("a", 1)) == []


@pytest.mark.parametrize("attribute", ["dtype", "device", "ndim"])
def test_dtype_device_and_ndim_reads_observe_every_dim(attribute):
    case = single_op(getattr, torch.randn(3, 5, 7), attribute)
    assert case.rule.name == "attribute_read"
    assert observed_dims(case) == {("a", 0), ("a", 1), ("a", 2)}
    assert all(case.frozen(("a", dim)) == [] for dim in range(3))
    assert case.ties() == []


@pytest.mark.parametrize("attribute", ["T", "mT"])
def test_other_attribute_reads_tie_nothing_and_freeze_input_and_result(attribute):
    case = single_op(getattr, torch.randn(5, 7), attribute)
    assert case.rule.name == "attribute_read"
    assert case.ties() == []
    for dim in [("a", 0), ("a", 1), ("op", 0), ("op", 1)]:
        assert any(UNTIED in reason for reason in case.frozen(dim)), dim
    assert case.apart(("a", 0), ("op", 1))  # the transpose is not read as a channel map


# ----- rank_read

def test_rank_read_observes_every_dim_and_freezes_none():
    case = single_op("dim", torch.randn(3, 5, 7))
    assert case.rule.name == "rank_read"
    assert case.relations() == [Observe(DimRef("a", d)) for d in range(3)]


def test_rank_used_as_a_value_keeps_channels_prunable_unlike_a_size():
    rank = traced_case(Convs(lambda h: h * h.dim()), IMAGE, node="dim")
    assert rank.ties() == [] and all(rank.frozen(("a", d)) == [] for d in range(4))
    assert prunable(rank, ("a", 1))
    size = traced_case(Convs(lambda h: h * h.size(1)), IMAGE, node="size")
    assert not prunable(size, ("a", 1))
