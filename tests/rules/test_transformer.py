"""Rules of the transformer blocks (``fxprune.rules.transformer``): the residual stream and the per-head
widths that self-attention and Swin's window attention tie, and Swin's patch merging of 2×2 tokens."""

import numpy as np
import torch
import torch.nn as nn
import torchvision.models.swin_transformer as swin
import torchvision.models.video.swin_transformer as swin3d
from single_op import SingleOp, single_op

from fxprune.analysis.analyze import analyze_graph
from fxprune.graph.tensors import DimRef
from fxprune.pipeline import traced
from fxprune.rules import Freeze
from fxprune.rules.pruned_ops import PrunedMultiheadAttention

RULES = ("multihead_attention", "patch_merging", "window_attention")

UNMENTIONED = "does not keep this dim's channels apart"
QKV, PROJ = "param:attn.in_proj_weight", "param:attn.out_proj.weight"


def traced_op(model: nn.Module, inputs: tuple, target, leaf_modules=()) -> SingleOp:
    """``model`` traced and analyzed, with questions about its (first) node of ``target``."""
    gm = traced(model.eval(), inputs, leaf_modules)
    return SingleOp(analyze_graph(gm), next(n for n in gm.graph.nodes if n.target == target))


def whole_ties(case) -> set[tuple[DimRef, DimRef]]:
    return {(t.a, t.b) for t in case.ties() if t.a_index is None}


def head_rows(heads: int, width: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of every head from ``start`` on, and the matching rows of head 0."""
    rows = np.arange(heads * width)
    return start + rows, start + rows % width


def assert_per_head_ties(case, qkv: str, proj: str, heads: int, qk: int, v: int):
    """Query row h·qk+i = query row i = key row h·qk+i; value row h·v+i = value row i = proj column h·v+i."""
    q_rows, q_head0 = head_rows(heads, qk)
    k_rows = q_rows + heads * qk
    v_rows, v_head0 = head_rows(heads, v, 2 * heads * qk)
    assert case.same_channels((qkv, 0), (qkv, 0), a_index=q_rows, b_index=q_head0)
    assert case.same_channels((qkv, 0), (qkv, 0), a_index=q_rows, b_index=k_rows)
    assert case.same_channels((qkv, 0), (qkv, 0), a_index=v_rows, b_index=v_head0)
    assert case.same_channels((qkv, 0), (proj, 1), a_index=v_rows, b_index=np.arange(heads * v))
    rows = case.labels((qkv, 0))
    assert len(set(rows[: 2 * heads * qk])) == qk and len(set(rows[2 * heads * qk:])) == v  # one per in-head index
    assert not set(rows[: 2 * heads * qk]) & set(rows[2 * heads * qk:])  # query/key apart from values
    assert case.apart((qkv, 0), (qkv, 1)) and case.apart((proj, 0), (proj, 1))


class SelfAttention(nn.Module):
    def __init__(self, attention: nn.Module):
        super().__init__()
        self.attn = attention

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


class CrossAttention(SelfAttention):
    def forward(self, x, memory):
        return self.attn(x, memory, memory, need_weights=False)[0]


class MaskedAttention(SelfAttention):
    def __init__(self, attention: nn.Module, tokens: int):
        super().__init__(attention)
        self.register_buffer("mask", torch.ones(tokens, tokens, dtype=torch.bool).triu(1))

    def forward(self, x):
        return self.attn(x, x, x, attn_mask=self.mask, need_weights=False)[0]


# ----- multihead_attention


def test_self_attention_ties_the_stream_to_in_projection_columns_and_out_projection_rows():
    case = traced_op(SelfAttention(nn.MultiheadAttention(15, 3, batch_first=True)), (torch.randn(2, 7, 15),), "attn")
    assert case.rule.name == "multihead_attention"
    assert whole_ties(case) == {
        (DimRef("x", 2), DimRef(QKV, 1)), (DimRef("attn#0", 2), DimRef(PROJ, 0)),
        (DimRef("param:attn.in_proj_bias", 0), DimRef(QKV, 0)),
        (DimRef("param:attn.out_proj.bias", 0), DimRef(PROJ, 0)),
        (DimRef("x", 0), DimRef("attn#0", 0)), (DimRef("x", 1), DimRef("attn#0", 1))}
    assert case.same_channels(("x", 2), (QKV, 1)) and case.same_channels(("attn#0", 2), ("param:attn.out_proj.bias", 0))
    assert case.apart(("x", 2), (QKV, 0))


def test_self_attention_ties_index_i_of_every_head_for_queries_keys_and_values():
    case = traced_op(SelfAttention(nn.MultiheadAttention(15, 3, batch_first=True)), (torch.randn(2, 7, 15),), "attn")
    assert_per_head_ties(case, QKV, PROJ, heads=3, qk=5, v=5)


def test_sequence_first_attention_ties_sequence_and_batch_dims_through():
    case = traced_op(SelfAttention(nn.MultiheadAttention(15, 3, bias=False)), (torch.randn(7, 2, 15),), "attn")
    assert whole_ties(case) == {(DimRef("x", 2), DimRef(QKV, 1)), (DimRef("attn#0", 2), DimRef(PROJ, 0)),
                                (DimRef("x", 0), DimRef("attn#0", 0)), (DimRef("x", 1), DimRef("attn#0", 1))}
    assert_per_head_ties(case, QKV, PROJ, heads=3, qk=5, v=5)


def test_pruned_attention_ties_query_key_and_value_heads_of_their_own_widths():
    attention = PrunedMultiheadAttention(7, 2, qk_dim=3, v_dim=5, scale=0.5, batch_first=True)
    # not a leaf of the default tracer: the rewrite installs it in a graph that is not traced again
    case = traced_op(SelfAttention(attention), (torch.randn(2, 11, 7),), "attn", (PrunedMultiheadAttention,))
    assert case.analysis.table.shapes[QKV] == (22, 7) and case.analysis.table.shapes[PROJ] == (7, 10)
    assert_per_head_ties(case, QKV, PROJ, heads=2, qk=3, v=5)
    assert case.same_channels(("x", 2), (QKV, 1))


def test_cross_attention_is_frozen_whole():
    case = traced_op(CrossAttention(nn.MultiheadAttention(15, 3, batch_first=True)),
                     (torch.randn(2, 7, 15), torch.randn(2, 11, 15)), "attn")
    assert case.ties() == []
    for dim in [(QKV, 0), (QKV, 1), (PROJ, 1), ("x", 2), ("memory", 2)]:
        assert any(UNMENTIONED in r and "MultiheadAttention" in r for r in case.frozen(dim)), dim


def test_masked_self_attention_is_frozen_whole():
    model = MaskedAttention(nn.MultiheadAttention(15, 3, batch_first=True), tokens=7)
    case = traced_op(model, (torch.randn(2, 7, 15),), "attn")
    assert case.ties() == []
    assert any(UNMENTIONED in r for r in case.frozen((QKV, 0)))
    assert any(UNMENTIONED in r for r in case.frozen(("attn#0", 2)))


# ----- window_attention

C, HEADS = 10, 2  # two heads of width 5


def window_case(x, **kwargs):
    qkv, proj, bias = torch.randn(3 * C, C), torch.randn(C, C), torch.randn(1, HEADS, 16, 16)
    return single_op(swin.shifted_window_attention, x, qkv, proj, bias, [4, 4], HEADS, [0, 0],
                     qkv_bias=torch.randn(3 * C), proj_bias=torch.randn(C), training=False, **kwargs)


def test_window_attention_ties_the_stream_and_the_token_dims():
    case = window_case(torch.randn(2, 4, 8, C))  # a: x, b: qkv, c: proj, d: position bias, e/f: biases
    assert case.rule.name == "window_attention"
    assert whole_ties(case) == {(DimRef("a", 3), DimRef("b", 1)), (DimRef("op", 3), DimRef("c", 0)),
                                (DimRef("e", 0), DimRef("b", 0)), (DimRef("f", 0), DimRef("c", 0))} | {
                                    (DimRef("a", i), DimRef("op", i)) for i in range(3)}
    assert case.apart(("a", 3), ("op", 3))


def test_window_attention_ties_index_i_of_every_head_and_keeps_the_position_bias():
    case = window_case(torch.randn(2, 4, 8, C))
    assert_per_head_ties(case, "b", "c", heads=HEADS, qk=5, v=5)
    assert case.same_channels(("e", 0), ("b", 0))
    for dim in range(4):
        assert any(UNMENTIONED in r and "shifted_window_attention" in r for r in case.frozen(("d", dim)))


def test_cosine_window_attention_keeps_query_and_key_rows_whole_but_ties_value_heads():
    case = window_case(torch.randn(2, 4, 8, C), logit_scale=torch.rand(HEADS, 1, 1))
    freezes = [r for r in case.relations() if isinstance(r, Freeze) and r.at == DimRef("b", 0)]
    assert len(freezes) == 1 and "cosine attention normalises" in freezes[0].reason
    assert np.array_equal(freezes[0].index, np.arange(2 * C))
    v_rows, v_head0 = head_rows(HEADS, 5, 2 * C)
    assert case.same_channels(("b", 0), ("b", 0), a_index=v_rows, b_index=v_head0)
    assert case.same_channels(("b", 0), ("c", 1), a_index=v_rows, b_index=np.arange(C))
    assert case.same_channels(("a", 3), ("b", 1))


def test_swin3d_window_attention_ties_stream_and_heads_from_its_positional_arguments():
    x = torch.randn(1, 2, 4, 4, C)
    case = single_op(swin3d.shifted_window_attention_3d, x, torch.randn(3 * C, C), torch.randn(C, C),
                     torch.randn(1, HEADS, 32, 32), [2, 4, 4], HEADS, [0, 0, 0], 0.0, 0.0, torch.randn(3 * C),
                     torch.randn(C), False)
    assert case.rule.name == "window_attention"
    assert {(DimRef("a", 4), DimRef("b", 1)), (DimRef("op", 4), DimRef("c", 0)), (DimRef("e", 0), DimRef("b", 0)),
            (DimRef("f", 0), DimRef("c", 0))} <= whole_ties(case)
    assert_per_head_ties(case, "b", "c", heads=HEADS, qk=5, v=5)
    assert case.frozen(("d", 1))


def test_swin_block_ties_its_qkv_and_projection_parameters_per_head():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = swin.ShiftedWindowAttention(C, [4, 4], [2, 2], num_heads=HEADS)

        def forward(self, x):
            return self.attn(x)

    case = traced_op(Block(), (torch.randn(1, 8, 8, C),), swin.shifted_window_attention)
    qkv, proj = "param:attn.qkv.weight", "param:attn.proj.weight"
    assert_per_head_ties(case, qkv, proj, heads=HEADS, qk=5, v=5)
    assert case.same_channels(("x", 3), (qkv, 1)) and case.same_channels((proj, 0), ("param:attn.proj.bias", 0))


# ----- patch_merging


def test_patch_merging_ties_output_channel_k_c_plus_c_to_input_channel_c():
    case = single_op(swin._patch_merging_pad, torch.randn(2, 5, 7, 3))  # odd sides are padded: (2, 3, 4, 12)
    assert case.rule.name == "patch_merging"
    assert case.analysis.table.shapes["op"] == (2, 3, 4, 12)
    assert case.same_channels(("a", 3), ("op", 3), a_index=np.tile(np.arange(3), 4), b_index=np.arange(12))
    assert case.same_channels(("a", 0), ("op", 0))
    out = case.labels(("op", 3))
    assert len(set(out)) == 3 and out[0] != out[1] != out[2]  # different input channels stay apart


def test_patch_merging_freezes_the_merged_spatial_dims():
    case = single_op(swin._patch_merging_pad, torch.randn(3, 2, 5, 7, 3))
    assert whole_ties(case) == {(DimRef("a", 0), DimRef("op", 0)), (DimRef("a", 1), DimRef("op", 1))}
    for dim in [("a", 2), ("a", 3), ("op", 2), ("op", 3)]:
        assert any(UNMENTIONED in r and "_patch_merging_pad" in r for r in case.frozen(dim)), dim
    assert case.frozen(("a", 4)) == []


def test_torchvision_patch_merging_ties_each_input_channel_to_four_norm_and_reduction_slots():
    case = traced_op(swin.PatchMerging(3), (torch.randn(1, 4, 6, 3),), swin._patch_merging_pad)
    four = np.tile(np.arange(3), 4)
    assert case.same_channels(("x", 3), ("param:norm.weight", 0), a_index=four, b_index=np.arange(12))
    assert case.same_channels(("x", 3), ("param:reduction.weight", 1), a_index=four, b_index=np.arange(12))
    assert case.apart(("x", 3), ("param:reduction.weight", 0))
