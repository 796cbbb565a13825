"""ATen ops (torch.export's capture): aliases of the FX rules, and the ones with rules of their own."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import compress_checked, randomize
from single_op import single_op

import fxprune
from fxprune.rules import aten as aten_rules
from fxprune.rules import base

RULES = ("batch_norm_aten", "embedding_aten", "slice_aten", "select_aten", "scaled_dot_product_attention",
         "addmm_aten", "metadata_check")
aten = torch.ops.aten


def test_every_alias_names_an_op_that_has_a_rule():
    missing = [str(op) for op, target in aten_rules.ALIASES.items() if base.find_rule(base._key_of(target)) is None]
    assert not missing


def test_an_aliased_aten_op_gets_the_rule_and_facts_of_its_target():
    case = single_op(aten.conv2d.default, torch.randn(1, 3, 7, 7), torch.randn(5, 3, 3, 3))
    assert case.rule.name == "conv_function" and case.rule.latency == "producer"
    assert case.same_channels(("a", 1), ("b", 1)) and case.same_channels(("op", 1), ("b", 0))


@pytest.mark.parametrize("op, args", [
    (aten.upsample_nearest2d.vec, (None, [2.0, 2.0])),
    (aten.upsample_bilinear2d.vec, ((6, 6), False, None)),
], ids=["nearest", "bilinear"])
def test_aten_upsampling_is_a_resize_that_keeps_batch_and_channels(op, args):
    case = single_op(op, torch.randn(2, 5, 3, 3), *args)
    assert case.rule.name == "resize"
    assert case.same_channels(("a", 1), ("op", 1)) and case.same_channels(("a", 0), ("op", 0))
    assert case.frozen(("a", 2))  # new spatial dims


def test_aten_matmul_is_the_matmul_rule():
    case = single_op(aten.matmul.default, torch.randn(2, 4, 5, 8), torch.randn(2, 4, 8, 7))
    assert case.rule.name == "matmul"
    assert case.same_channels(("a", 3), ("b", 2)) and case.same_channels(("b", 3), ("op", 3))


def test_aten_batch_norm_ties_its_vectors_in_their_own_order():
    x, weight, bias, mean, var = torch.randn(2, 5, 3, 3), torch.rand(5), torch.rand(5), torch.rand(5), torch.rand(5)
    case = single_op(aten.batch_norm.default, x, weight, bias, mean, var, False, 0.1, 1e-5, False)
    assert case.rule.name == "batch_norm_aten"
    for vector in "bcde":
        assert case.same_channels((vector, 0), ("op", 1))
    assert case.apart(("b", 0), ("op", 0))


def test_an_aten_op_without_a_rule_freezes_what_it_touches():
    case = single_op(aten.flip.default, torch.randn(2, 5, 3), [1])
    assert any("no rule for function" in reason for reason in case.frozen(("a", 1)))


UNTIED = "does not keep this dim's channels apart"


def test_aten_embedding_ties_the_output_width_to_the_weight_columns_and_keeps_rows_and_ids():
    weight, ids = torch.randn(10, 6), torch.randint(0, 10, (2, 5))
    case = single_op(aten.embedding.default, weight, ids, 0)
    assert case.rule.name == "embedding_aten"
    assert case.same_channels(("op", 2), ("a", 1))
    assert case.same_channels(("b", 0), ("op", 0)) and case.same_channels(("b", 1), ("op", 1))
    assert case.apart(("a", 1), ("b", 1)) and case.apart(("a", 0), ("op", 2))
    assert any(UNTIED in reason for reason in case.frozen(("a", 0)))  # one row per id: the rows stay


def test_aten_slice_ties_the_taken_slots_with_an_offset_and_passes_the_other_dims():
    case = single_op(aten.slice.Tensor, torch.randn(2, 8, 3), 1, 2, 6)
    assert case.same_channels(("a", 1), ("op", 1), a_index=range(2, 6), b_index=range(4))
    assert case.same_channels(("a", 0), ("op", 0)) and case.same_channels(("a", 2), ("op", 2))
    assert not set(case.labels(("a", 1))[[0, 1, 6, 7]]) & set(case.labels(("op", 1)))  # slots not read
    stepped = single_op(aten.slice.Tensor, torch.randn(2, 8, 3), 1, 0, 8, 2)
    assert any(UNTIED in reason for reason in stepped.frozen(("a", 1)))  # only unit steps are followed
    assert stepped.same_channels(("a", 2), ("op", 2))


def test_aten_select_passes_the_other_dims_shifted_and_keeps_the_indexed_dim_whole():
    case = single_op(aten.select.int, torch.randn(2, 5, 3), 1, 0)
    assert case.rule.name == "select_aten"
    assert case.same_channels(("a", 0), ("op", 0)) and case.same_channels(("a", 2), ("op", 1))
    assert any(UNTIED in reason for reason in case.frozen(("a", 1)))


def test_sdpa_ties_query_key_width_value_width_heads_and_lengths():
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 6)
    mask = torch.ones(2, 1, 5, 7, dtype=torch.bool)
    case = single_op(aten.scaled_dot_product_attention.default, q, k, v, mask, scale=0.3)
    assert case.rule.name == "scaled_dot_product_attention"
    assert case.same_channels(("a", 3), ("b", 3))  # query/key width: one term of every logit
    assert case.same_channels(("c", 3), ("op", 3)) and case.apart(("a", 3), ("c", 3))
    for tensor in "bc":
        assert case.same_channels(("a", 1), (tensor, 1))  # heads
    assert case.same_channels(("a", 1), ("op", 1)) and case.same_channels(("a", 0), ("op", 0))
    assert case.same_channels(("a", 2), ("op", 2)) and case.same_channels(("b", 2), ("c", 2))
    assert case.same_channels(("d", 3), ("b", 2)) and case.same_channels(("d", 2), ("a", 2))
    assert case.apart(("a", 2), ("b", 2)) and case.apart(("d", 1), ("a", 1))  # the mask broadcasts over heads
    fx = single_op(F.scaled_dot_product_attention, q, k, v)
    assert fx.rule.name == "scaled_dot_product_attention" and fx.same_channels(("a", 3), ("b", 3))


def test_sdpa_with_grouped_query_heads_keeps_the_heads_whole():
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    case = single_op(aten.scaled_dot_product_attention.default, q, k, v, enable_gqa=True)
    assert case.same_channels(("a", 3), ("b", 3)) and case.same_channels(("c", 3), ("op", 3))
    assert any(UNTIED in reason for reason in case.frozen(("b", 1)))
    assert case.apart(("a", 1), ("b", 1))


class HeadsAttention(nn.Module):
    """Multi-head self-attention written with F.scaled_dot_product_attention and its default scale."""

    def __init__(self, width=16, heads=2):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.embed, self.head = nn.Linear(3, width), nn.Linear(width, 5)

    def forward(self, x):
        x = self.embed(x)
        b, n, c = x.shape
        q, k, v = (f(x).view(b, n, self.heads, c // self.heads).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.head(x + self.o(y))


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_sdpa_prunes_head_widths_exactly_with_the_original_scale(capture, monkeypatch):
    import fxprune.graph.capture as capture_module

    model = randomize(HeadsAttention())
    if capture == "export":  # the helper captures by "auto": FX first
        monkeypatch.setattr(capture_module, "trace", lambda *a, **k: (_ for _ in ()).throw(fxprune.TraceError("x")))
    small, analysis, plan, result = compress_checked(model, (torch.randn(2, 6, 3),), ratio=0.5)
    assert result.exact and analysis.gm.meta.get("fxprune_capture", "fx") == capture
    assert small.get_parameter("q.weight").shape[0] == 8 and small.get_parameter("v.weight").shape[0] == 8


def test_aten_addmm_is_a_linear_layer_with_its_weight_stored_transposed():
    bias, x, weight = torch.randn(6), torch.randn(4, 5), torch.randn(5, 6)
    case = single_op(aten.addmm.default, bias, x, weight)
    assert case.rule.name == "addmm_aten" and case.rule.latency == "producer"
    assert case.same_channels(("b", 1), ("c", 0))  # input width = weight rows
    assert case.same_channels(("c", 1), ("op", 1)) and case.same_channels(("a", 0), ("op", 1))
    assert case.same_channels(("b", 0), ("op", 0)) and case.apart(("b", 1), ("op", 1))


def test_aten_metadata_check_reads_no_channel():
    case = single_op(aten._assert_tensor_metadata.default, torch.randn(2, 5), dtype=torch.float32)
    assert case.rule.name == "metadata_check" and not case.frozen(("a", 1)) and not case.ties()
