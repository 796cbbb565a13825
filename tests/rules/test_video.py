"""Rules of torchvision's MViT helpers (``fxprune.rules.video``): ``_unsqueeze`` / ``_squeeze`` add or drop a
heads axis and ``_add_shortcut`` adds a residual; each ties every dim through, slot for slot."""

import numpy as np
import torch
import torch.nn as nn
from single_op import SingleOp, single_op
from torchvision.models.video import mvit

from fxprune.analysis.analyze import analyze_graph
from fxprune.graph.tensors import DimRef
from fxprune.pipeline import traced

RULES = ("mvit_add_shortcut", "mvit_squeeze", "mvit_unsqueeze")

UNMENTIONED = "does not keep this dim's channels apart"


def whole_ties(case) -> set[tuple[DimRef, DimRef]]:
    assert all(t.a_index is None and t.b_index is None for t in case.ties())
    return {(t.a, t.b) for t in case.ties()}


def pairs(a: str, b: str, dims: list[tuple[int, int]]) -> set[tuple[DimRef, DimRef]]:
    return {(DimRef(a, i), DimRef(b, j)) for i, j in dims}


# ----- mvit_unsqueeze


def test_unsqueeze_ties_batch_tokens_and_channels_around_the_new_heads_axis():
    case = single_op(mvit._unsqueeze, torch.randn(2, 5, 7), 4, 1)  # element 0: (2, 1, 5, 7)
    assert case.rule.name == "mvit_unsqueeze"
    assert case.analysis.table.shapes["op#0"] == (2, 1, 5, 7)
    assert whole_ties(case) == pairs("a", "op#0", [(0, 0), (1, 2), (2, 3)])
    assert case.same_channels(("a", 2), ("op#0", 3)) and case.same_channels(("a", 1), ("op#0", 2))


def test_unsqueeze_does_not_tie_tokens_to_channels_of_the_same_size():
    case = single_op(mvit._unsqueeze, torch.randn(3, 5, 5), 4, 1)
    assert case.apart(("a", 2), ("op#0", 2)) and case.apart(("a", 1), ("op#0", 3))
    assert case.apart(("a", 0), ("op#0", 2))


def test_unsqueeze_of_a_tensor_that_has_its_heads_axis_ties_every_dim_to_itself():
    case = single_op(mvit._unsqueeze, torch.randn(2, 3, 5, 7), 4, 1)
    assert whole_ties(case) == pairs("a", "op#0", [(i, i) for i in range(4)])
    assert case.same_channels(("a", 1), ("op#0", 1))  # the heads axis too


def test_video_unsqueeze_of_a_clip_adds_an_axis_at_dim_2():
    case = single_op(mvit._unsqueeze, torch.randn(2, 3, 5, 7), 5, 2)  # (2, 3, 1, 5, 7)
    assert whole_ties(case) == pairs("a", "op#0", [(0, 0), (1, 1), (2, 3), (3, 4)])


# ----- mvit_squeeze


def test_squeeze_drops_the_heads_axis_and_ties_the_rest():
    case = single_op(mvit._squeeze, torch.randn(2, 1, 5, 7), 4, 1, 3)
    assert case.rule.name == "mvit_squeeze"
    assert case.analysis.table.shapes["op"] == (2, 5, 7)
    assert whole_ties(case) == pairs("a", "op", [(0, 0), (2, 1), (3, 2)])
    assert case.apart(("a", 3), ("op", 1))


def test_squeeze_of_an_input_that_had_heads_keeps_them_and_ties_every_dim():
    case = single_op(mvit._squeeze, torch.randn(2, 3, 5, 7), 4, 1, 4)
    assert whole_ties(case) == pairs("a", "op", [(i, i) for i in range(4)])


def test_squeeze_does_not_tie_tokens_to_channels_of_the_same_size():
    case = single_op(mvit._squeeze, torch.randn(3, 1, 5, 5), 4, 1, 3)
    assert case.same_channels(("a", 3), ("op", 2))
    assert case.apart(("a", 3), ("op", 1)) and case.apart(("a", 2), ("op", 2))


# ----- mvit_add_shortcut


def test_add_shortcut_ties_every_dim_of_both_terms_to_the_sum():
    for with_cls in (True, False):
        case = single_op(mvit._add_shortcut, torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7), with_cls)
        assert case.rule.name == "mvit_add_shortcut"
        assert whole_ties(case) == pairs("a", "op", [(i, i) for i in range(4)]) | pairs("b", "op", [(i, i)
                                                                                             for i in range(4)])
        assert case.same_channels(("a", 3), ("b", 3)) and case.same_channels(("a", 2), ("b", 2))
        assert case.apart(("a", 3), ("b", 2))


def test_add_shortcut_with_a_broadcast_shortcut_is_frozen_whole():
    case = single_op(mvit._add_shortcut, torch.randn(2, 3, 5, 7), torch.randn(1, 3, 5, 7), True)
    assert case.ties() == []
    for dim in [("a", 3), ("b", 3), ("op", 3), ("b", 0)]:
        assert any(UNMENTIONED in r and "_add_shortcut" in r for r in case.frozen(dim)), dim
    assert case.apart(("a", 3), ("b", 3))


# ----- in torchvision's pooling attention


class PoolingAttention(nn.Module):
    """MViT's attention over a 2×4×4 clip of 10 channels in 2 heads of 5, with pooled q, k and v."""

    def __init__(self):
        super().__init__()
        self.attn = mvit.MultiscaleAttention([2, 4, 4], 10, 10, 2, [3, 3, 3], [3, 3, 3], [1, 1, 1], [1, 2, 2],
                                             residual_pool=True, residual_with_cls_embed=True, rel_pos_embed=False)

    def forward(self, x):
        return self.attn(x, (2, 4, 4))[0]


def pooling_attention() -> tuple:
    gm = traced(PoolingAttention().eval(), (torch.randn(1, 33, 10),))
    analysis = analyze_graph(gm)
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    return analysis, nodes


def test_pooling_attention_helpers_tie_the_head_width_through_to_the_residual_sum():
    analysis, nodes = pooling_attention()
    helpers = {f: [SingleOp(analysis, n) for n in nodes if n.target is f]
               for f in (mvit._unsqueeze, mvit._squeeze, mvit._add_shortcut)}
    assert [len(helpers[f]) for f in (mvit._unsqueeze, mvit._squeeze, mvit._add_shortcut)] == [3, 3, 1]
    for case in helpers[mvit._unsqueeze]:  # (1, 2, 33, 5) has its heads axis; a batch of one is no channel
        assert whole_ties(case) == pairs(case.node.args[0].name, f"{case.node.name}#0", [(1, 1), (2, 2), (3, 3)])
    for case in helpers[mvit._squeeze]:
        assert whole_ties(case) == pairs(case.node.args[0].name, case.node.name, [(1, 1), (2, 2), (3, 3)])
    shortcut = helpers[mvit._add_shortcut][0]
    x, q = (a.name for a in shortcut.node.args[:2])
    assert whole_ties(shortcut) == pairs(x, "_add_shortcut", [(i, i) for i in range(4)]) | pairs(
        q, "_add_shortcut", [(i, i) for i in range(4)])


def test_pooling_attention_ties_the_pooled_query_norm_to_the_residual_head_width():
    analysis, nodes = pooling_attention()
    case = SingleOp(analysis, next(n for n in nodes if n.target is mvit._add_shortcut))
    assert case.same_channels(("_add_shortcut", 3), ("param:attn.pool_q.norm_act.0.weight", 0))
    assert case.same_channels(("_add_shortcut", 3), ("param:attn.pool_v.norm_act.0.weight", 0))
    assert case.apart(("_add_shortcut", 1), ("_add_shortcut", 3))
    head = case.labels(("_add_shortcut", 3))
    qkv_rows = case.labels(("param:attn.qkv.weight", 0))
    assert np.array_equal(qkv_rows[20:25], head) and np.array_equal(qkv_rows[25:30], head)  # both value heads
