"""Rules of the layers with weights and the norms (``fxprune.rules.layers``, ``fxprune.rules.norms``):
which channels convs, linear layers, embeddings and norms tie to their parameters, what they freeze,
and the per-op facts they register."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from single_op import single_op

import fxprune
from fxprune.analysis.analyze import analyze_graph
from fxprune.graph.tensors import DimRef, canonical_names
from fxprune.pipeline import traced
from fxprune.rules import NodeView, find_rule

RULES = (
    "batch_norm_function",
    "batch_norm_module",
    "conv_function",
    "conv_module",
    "conv_transpose_module",
    "embedding_module",
    "layer_norm_function",
    "layer_norm_module",
    "linear_function",
    "linear_module",
    "rms_norm_function",
    "rms_norm_module",
)

W, B = "param:op.weight", "param:op.bias"
UNMENTIONED = "does not keep this dim's channels apart"


def whole_ties(case) -> set[tuple[DimRef, DimRef]]:
    """The op's ties that relate two dims slot for slot (no index arrays)."""
    return {(t.a, t.b) for t in case.ties() if t.a_index is None}


def d(key: str, dim: int) -> DimRef:
    return DimRef(key, dim)


def normalized_dims(case) -> list[int]:
    gm = case.analysis.gm
    return case.rule.normalizes(NodeView(case.node, gm, case.analysis.table, canonical_names(gm)))


def module_rule(cls):
    return find_rule(("module", cls))


# ----- conv_module


def test_conv2d_ties_input_channels_to_weight_columns_and_output_channels_to_weight_rows_and_bias():
    case = single_op(nn.Conv2d(3, 5, 3), torch.randn(2, 3, 7, 7))
    assert case.rule.name == "conv_module"
    assert whole_ties(case) == {(d("op", 1), d(W, 0)), (d(B, 0), d(W, 0)), (d("a", 0), d("op", 0)),
                                (d("a", 1), d(W, 1))}
    assert case.same_channels(("a", 1), (W, 1))
    assert case.same_channels(("op", 1), (W, 0)) and case.same_channels(("op", 1), (B, 0))
    assert case.same_channels(("a", 0), ("op", 0))
    assert case.apart(("a", 1), ("op", 1))


def test_conv2d_freezes_the_spatial_dims_and_the_kernel_because_it_mixes_them():
    case = single_op(nn.Conv2d(3, 5, 3), torch.randn(2, 3, 7, 7))
    for dim in [("a", 2), ("a", 3), ("op", 2), ("op", 3), (W, 2), (W, 3)]:
        reasons = case.frozen(dim)
        assert reasons and all(UNMENTIONED in r and "Conv2d" in r for r in reasons), dim
    assert case.frozen(("a", 1)) == [] and case.frozen((W, 0)) == []


def test_unbatched_conv2d_takes_its_leading_dim_as_the_channel():
    case = single_op(nn.Conv2d(3, 5, 3, bias=False), torch.randn(3, 7, 7))
    assert whole_ties(case) == {(d("op", 0), d(W, 0)), (d("a", 0), d(W, 1))}
    assert case.same_channels(("a", 0), (W, 1)) and case.same_channels(("op", 0), (W, 0))
    assert case.frozen(("a", 1)) and case.frozen(("op", 2))


@pytest.mark.parametrize("conv, x", [(nn.Conv1d(3, 5, 3), torch.randn(2, 3, 11)),
                                     (nn.Conv3d(3, 5, 3), torch.randn(2, 3, 5, 7, 7))])
def test_conv1d_and_conv3d_tie_channels_at_dim_1_like_conv2d(conv, x):
    case = single_op(conv, x)
    assert case.rule.name == "conv_module"
    assert case.same_channels(("a", 1), (W, 1))
    assert case.same_channels(("op", 1), (W, 0)) and case.same_channels(("op", 1), (B, 0))
    assert case.apart(("a", 1), ("op", 1))
    assert case.frozen(("op", 2))


def test_depthwise_conv_ties_input_channel_i_to_the_output_channels_of_group_i():
    case = single_op(nn.Conv2d(5, 15, 3, groups=5), torch.randn(2, 5, 7, 7))
    assert case.same_channels(("a", 1), ("op", 1), a_index=np.repeat(np.arange(5), 3), b_index=np.arange(15))
    assert case.same_channels(("op", 1), (W, 0)) and case.same_channels(("op", 1), (B, 0))
    x, y = case.labels(("a", 1)), case.labels(("op", 1))
    assert len(set(x)) == 5 and not set(x[:1]) & set(y[3:])  # channel 0 feeds outputs 0..2 only
    assert case.frozen((W, 1))  # the single input column per group stays


def test_grouped_conv_ties_weight_columns_per_in_group_index_and_outputs_per_out_group_index():
    case = single_op(nn.Conv2d(6, 10, 3, groups=2), torch.randn(2, 6, 7, 7))  # 3 inputs, 5 outputs a group
    assert case.same_channels(("a", 1), (W, 1), a_index=np.arange(6), b_index=np.arange(6) % 3)
    assert case.same_channels(("op", 1), ("op", 1), a_index=np.arange(10), b_index=np.arange(10) % 5)
    assert case.same_channels(("op", 1), (W, 0))
    x, y = case.labels(("a", 1)), case.labels(("op", 1))
    assert len(set(x)) == 3 and len(set(y)) == 5  # one channel per in-group (out-group) index
    assert case.apart(("a", 1), ("op", 1))


def test_conv2d_refit_accepts_an_ungrouped_conv_and_rejects_a_grouped_one():
    rule = module_rule(nn.Conv2d)
    assert rule.refit(nn.Conv2d(3, 5, 3)) is True
    assert rule.refit(nn.Conv2d(6, 10, 3, groups=2)) is False
    assert rule.refit(nn.Conv2d(5, 5, 3, groups=5)) is False


def test_conv1d_and_conv3d_have_no_refit_and_every_conv_is_a_producer():
    assert module_rule(nn.Conv1d).refit is None and module_rule(nn.Conv3d).refit is None
    for cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        assert module_rule(cls).latency == "producer"
    assert find_rule(("function", F.conv2d)).latency == "producer"


# ----- conv_function


def test_functional_conv2d_ties_weight_and_bias_passed_as_inputs():
    case = single_op(F.conv2d, torch.randn(2, 3, 7, 7), torch.randn(5, 3, 3, 3), torch.randn(5))
    assert case.rule.name == "conv_function"
    assert whole_ties(case) == {(d("op", 1), d("b", 0)), (d("c", 0), d("b", 0)), (d("a", 0), d("op", 0)),
                                (d("a", 1), d("b", 1))}
    assert case.same_channels(("a", 1), ("b", 1)) and case.same_channels(("op", 1), ("c", 0))
    assert case.apart(("a", 1), ("op", 1))


def test_functional_depthwise_conv_reads_groups_from_its_keyword():
    case = single_op(F.conv2d, torch.randn(2, 5, 7, 7), torch.randn(15, 1, 3, 3), groups=5)
    assert case.same_channels(("a", 1), ("op", 1), a_index=np.repeat(np.arange(5), 3), b_index=np.arange(15))
    assert case.same_channels(("op", 1), ("b", 0))
    assert case.frozen(("b", 1))


def test_functional_grouped_conv_reads_groups_from_its_seventh_argument():
    case = single_op(F.conv1d, torch.randn(2, 6, 11), torch.randn(10, 3, 3), None, 1, 0, 1, 2)
    assert case.same_channels(("a", 1), ("b", 1), a_index=np.arange(6), b_index=np.arange(6) % 3)
    assert case.same_channels(("op", 1), ("op", 1), a_index=np.arange(10), b_index=np.arange(10) % 5)
    assert case.apart(("a", 1), ("b", 0))


# ----- conv_transpose_module


def test_conv_transpose_ties_input_channels_to_weight_dim_0_and_output_channels_to_weight_dim_1():
    case = single_op(nn.ConvTranspose2d(3, 5, 3), torch.randn(2, 3, 7, 7))
    assert case.rule.name == "conv_transpose_module"
    assert whole_ties(case) == {(d("a", 1), d(W, 0)), (d("op", 1), d(W, 1)), (d("a", 0), d("op", 0)),
                                (d(B, 0), d("op", 1))}
    assert case.same_channels(("a", 1), (W, 0))
    assert case.same_channels(("op", 1), (W, 1)) and case.same_channels(("op", 1), (B, 0))
    assert case.apart(("a", 1), ("op", 1)) and case.apart((W, 0), (W, 1))
    assert case.frozen(("op", 2)) and case.frozen((W, 2))


def test_grouped_conv_transpose_is_frozen_whole():
    case = single_op(nn.ConvTranspose2d(6, 10, 3, groups=2), torch.randn(2, 6, 7, 7))
    assert case.ties() == []
    for dim in [("a", 1), ("op", 1), (W, 0), (W, 1), (B, 0)]:
        assert any(UNMENTIONED in r and "ConvTranspose2d" in r for r in case.frozen(dim)), dim


def test_unbatched_conv_transpose_takes_its_leading_dim_as_the_channel():
    case = single_op(nn.ConvTranspose2d(3, 5, 3), torch.randn(3, 3, 3))  # H = in channels: a wrong tie fits
    assert case.same_channels(("a", 0), (W, 0))
    assert case.same_channels(("op", 0), (W, 1))
    assert case.apart(("a", 1), (W, 0))


# ----- linear_module / linear_function


def test_linear_ties_input_features_to_weight_columns_and_output_features_to_weight_rows_and_bias():
    case = single_op(nn.Linear(5, 7), torch.randn(2, 3, 5))
    assert case.rule.name == "linear_module"
    assert whole_ties(case) == {(d("a", 2), d(W, 1)), (d("op", 2), d(W, 0)), (d(B, 0), d(W, 0)),
                                (d("a", 0), d("op", 0)), (d("a", 1), d("op", 1))}
    assert case.same_channels(("a", 2), (W, 1))
    assert case.same_channels(("op", 2), (W, 0)) and case.same_channels(("op", 2), (B, 0))
    assert case.same_channels(("a", 1), ("op", 1))


def test_a_square_linear_layer_keeps_its_input_and_output_features_apart():
    case = single_op(nn.Linear(5, 5), torch.randn(3, 5))
    assert case.apart(("a", 1), ("op", 1))
    assert case.apart((W, 0), (W, 1))


def test_linear_is_a_producer_that_can_always_be_refit():
    rule = module_rule(nn.Linear)
    assert rule.latency == "producer"
    assert rule.refit(nn.Linear(5, 7)) and rule.refit(nn.Linear(5, 7, bias=False))


def test_functional_linear_ties_weight_and_bias_passed_as_inputs():
    case = single_op(F.linear, torch.randn(3, 5), torch.randn(7, 5), torch.randn(7))
    assert case.rule.name == "linear_function"
    assert whole_ties(case) == {(d("a", 1), d("b", 1)), (d("op", 1), d("b", 0)), (d("c", 0), d("b", 0)),
                                (d("a", 0), d("op", 0))}
    assert case.same_channels(("op", 1), ("c", 0))
    assert case.apart(("a", 1), ("op", 1))


def test_functional_linear_without_bias_ties_only_the_weight():
    case = single_op(F.linear, torch.randn(2, 3, 5), torch.randn(7, 5))
    assert whole_ties(case) == {(d("a", 2), d("b", 1)), (d("op", 2), d("b", 0)), (d("a", 0), d("op", 0)),
                                (d("a", 1), d("op", 1))}
    assert find_rule(("function", F.linear)).latency == "producer"


# ----- embedding_module


def test_embedding_ties_the_output_last_dim_to_weight_columns_and_keeps_the_rows():
    case = single_op(nn.Embedding(11, 7), torch.randint(0, 11, (2, 5)))
    assert case.rule.name == "embedding_module"
    assert whole_ties(case) == {(d("a", 0), d("op", 0)), (d("a", 1), d("op", 1)), (d("op", 2), d(W, 1))}
    assert case.same_channels(("op", 2), (W, 1))
    assert case.same_channels(("a", 1), ("op", 1))
    assert any(UNMENTIONED in r for r in case.frozen((W, 0)))  # one row per id


def test_embedding_with_max_norm_freezes_its_columns_because_the_norm_mixes_them():
    case = single_op(nn.Embedding(11, 7, max_norm=1.0), torch.randint(0, 11, (2, 5)))
    assert whole_ties(case) == {(d("a", 0), d("op", 0)), (d("a", 1), d("op", 1))}
    assert any(UNMENTIONED in r and "Embedding" in r for r in case.frozen((W, 1)))
    assert case.frozen(("op", 2))
    assert case.apart(("op", 2), (W, 1))


# ----- batch_norm_module / batch_norm_function


def test_batch_norm_ties_weight_bias_and_running_statistics_to_the_channel():
    case = single_op(nn.BatchNorm2d(5).eval(), torch.randn(2, 5, 3, 7))
    assert case.rule.name == "batch_norm_module"
    vectors = [f"param:op.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
    assert {(d(v, 0), d("op", 1)) for v in vectors} <= whole_ties(case)
    assert {(d("a", i), d("op", i)) for i in range(4)} <= whole_ties(case)
    for v in vectors:
        assert case.same_channels((v, 0), ("op", 1)) and case.same_channels((v, 0), ("a", 1))
    assert case.frozen(("op", 1)) == []


def test_batch_norm_ties_its_vectors_to_dim_1_even_where_a_spatial_dim_has_the_channel_count():
    case = single_op(nn.BatchNorm2d(5).eval(), torch.randn(3, 5, 5, 5))
    for dim in (0, 2, 3):
        assert case.apart((W, 0), ("op", dim))
        assert case.same_channels(("a", dim), ("op", dim))
    assert case.apart(("op", 1), ("op", 2))


@pytest.mark.parametrize("x", [torch.randn(3, 5), torch.randn(3, 5, 7)])
def test_batch_norm_1d_ties_its_vectors_to_dim_1_with_or_without_a_length(x):
    case = single_op(nn.BatchNorm1d(5).eval(), x)
    assert case.same_channels((W, 0), ("op", 1)) and case.same_channels(("param:op.running_var", 0), ("a", 1))


def test_batch_norm_without_affine_or_statistics_ties_only_input_to_output():
    case = single_op(nn.BatchNorm2d(5, affine=False, track_running_stats=False), torch.randn(2, 5, 3, 7))
    assert whole_ties(case) == {(d("a", i), d("op", i)) for i in range(4)}
    assert case.analysis.table.param_keys == set()


def test_instance_norm_with_affine_ties_weight_and_bias_to_the_channel():
    case = single_op(nn.InstanceNorm2d(5, affine=True), torch.randn(2, 5, 3, 7))
    assert case.rule.name == "batch_norm_module"
    assert whole_ties(case) == {(d(W, 0), d("op", 1)), (d(B, 0), d("op", 1))} | {(d("a", i), d("op", i))
                                                                                 for i in range(4)}


def test_unbatched_instance_norm_ties_its_vectors_to_the_leading_dim():
    case = single_op(nn.InstanceNorm1d(5, affine=True), torch.randn(5, 5))  # L = C: the wrong tie fits
    assert case.same_channels((W, 0), ("op", 0))
    assert case.apart((W, 0), ("op", 1))


def test_batch_norms_are_fusable_and_instance_norms_are_charged_for_their_traffic():
    assert module_rule(nn.BatchNorm2d).latency == "fusable"
    assert module_rule(nn.BatchNorm1d).latency == "fusable"
    assert module_rule(nn.SyncBatchNorm).latency == "fusable"
    assert module_rule(nn.InstanceNorm2d).latency is None
    assert find_rule(("function", F.batch_norm)).latency == "fusable"


def test_batch_norm_shape_shortcut_rejects_an_input_with_another_channel_count():
    rule = module_rule(nn.BatchNorm2d)
    rule.same_shape(nn.BatchNorm2d(5).eval(), torch.randn(2, 5, 3, 3))
    with pytest.raises(RuntimeError, match=r"weight of BatchNorm2d has shape \(5,\), expected \(7,\)"):
        rule.same_shape(nn.BatchNorm2d(5).eval(), torch.randn(2, 7, 3, 3))
    with pytest.raises(ValueError):
        rule.same_shape(nn.BatchNorm2d(5).eval(), torch.randn(5, 3, 3))
    assert module_rule(nn.InstanceNorm2d).same_shape is None


def test_functional_batch_norm_ties_statistics_weight_and_bias_to_the_channel():
    vectors = [torch.zeros(5), torch.ones(5), torch.randn(5), torch.randn(5)]
    case = single_op(F.batch_norm, torch.randn(2, 5, 3, 7), *vectors, training=False)
    assert case.rule.name == "batch_norm_function"
    assert whole_ties(case) == {(d(k, 0), d("op", 1)) for k in "bcde"} | {(d("a", i), d("op", i)) for i in range(4)}
    assert case.apart(("b", 0), ("op", 2))


def test_functional_batch_norm_without_weight_and_bias_ties_the_statistics_only():
    case = single_op(F.batch_norm, torch.randn(2, 5, 7), torch.zeros(5), torch.ones(5))
    assert whole_ties(case) == {(d("b", 0), d("op", 1)), (d("c", 0), d("op", 1))} | {(d("a", i), d("op", i))
                                                                                      for i in range(3)}


# ----- layer_norm_module / layer_norm_function


def test_layer_norm_ties_weight_and_bias_to_the_normalised_dims_and_names_them():
    case = single_op(nn.LayerNorm((5, 7)), torch.randn(2, 3, 5, 7))
    assert case.rule.name == "layer_norm_module"
    assert whole_ties(case) == ({(d(W, 0), d("op", 2)), (d(W, 1), d("op", 3)), (d(B, 0), d("op", 2)),
                                 (d(B, 1), d("op", 3))} | {(d("a", i), d("op", i)) for i in range(4)})
    assert case.same_channels((W, 1), ("a", 3)) and case.same_channels((B, 0), ("a", 2))
    assert normalized_dims(case) == [2, 3]


def test_layer_norm_over_the_last_dim_does_not_tie_its_weight_to_an_equal_sized_other_dim():
    case = single_op(nn.LayerNorm(5), torch.randn(3, 5, 5))
    assert case.same_channels((W, 0), ("op", 2))
    assert case.apart((W, 0), ("op", 1)) and case.apart(("op", 1), ("op", 2))
    assert normalized_dims(case) == [2]


def test_layer_norm_without_affine_parameters_ties_input_to_output_and_still_normalizes():
    case = single_op(nn.LayerNorm(7, elementwise_affine=False), torch.randn(3, 5, 7))
    assert whole_ties(case) == {(d("a", i), d("op", i)) for i in range(3)}
    assert normalized_dims(case) == [2]
    case = single_op(nn.LayerNorm(7, bias=False), torch.randn(3, 5, 7))
    assert whole_ties(case) == {(d(W, 0), d("op", 2))} | {(d("a", i), d("op", i)) for i in range(3)}


def test_layer_norm_is_named_a_mixing_norm_where_it_normalises_prunable_channels():
    model = nn.Sequential(nn.Linear(3, 7), nn.LayerNorm(7), nn.Linear(7, 2))
    analysis = analyze_graph(traced(model, (torch.randn(2, 3),)))
    norm = next(n.name for n in analysis.gm.graph.nodes if n.op == "call_module" and n.target == "1")
    assert analysis.mixing_norms == [norm]
    assert module_rule(nn.LayerNorm).latency is None


def test_layer_norm_shape_shortcut_rejects_an_input_that_does_not_end_in_its_shape():
    rule = module_rule(nn.LayerNorm)
    rule.same_shape(nn.LayerNorm((5, 7)), torch.randn(3, 5, 7))
    with pytest.raises(RuntimeError, match="normalizes over"):
        rule.same_shape(nn.LayerNorm((5, 7)), torch.randn(3, 7, 5))


# ----- rms_norm_module / rms_norm_function


def test_rms_norm_ties_its_weight_to_the_normalised_dims_and_normalizes_them():
    case = single_op(nn.RMSNorm((5, 7)), torch.randn(2, 3, 5, 7))
    assert case.rule.name == "rms_norm_module"
    assert whole_ties(case) == {(d(W, 0), d("op", 2)), (d(W, 1), d("op", 3))} | {(d("a", i), d("op", i))
                                                                                  for i in range(4)}
    assert normalized_dims(case) == [2, 3]
    case = single_op(nn.RMSNorm(7, elementwise_affine=False), torch.randn(3, 5, 7))
    assert whole_ties(case) == {(d("a", i), d("op", i)) for i in range(3)}


def test_rms_norm_shape_shortcut_rejects_an_input_that_does_not_end_in_its_shape():
    rule = module_rule(nn.RMSNorm)
    rule.same_shape(nn.RMSNorm(7), torch.randn(3, 5, 7))
    with pytest.raises(RuntimeError, match="RMSNorm normalizes over"):
        rule.same_shape(nn.RMSNorm(7), torch.randn(3, 7, 5))


def test_functional_rms_norm_ties_a_weight_passed_as_input_and_shrinks_its_shape():
    case = single_op(F.rms_norm, torch.randn(3, 5, 7), [7], torch.randn(7), 1e-5)
    assert case.rule.name == "rms_norm_function"
    assert whole_ties(case) == {(d("b", 0), d("op", 2))} | {(d("a", i), d("op", i)) for i in range(3)}
    assert case.apart(("b", 0), ("op", 1))
    assert normalized_dims(case) == [2]


def test_a_pruned_rms_norm_normalises_over_the_kept_channels():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.RMSNorm(16), nn.Linear(16, 2))
    small = fxprune.compress(model, torch.randn(4, 3), ratio=0.5, round_to=1)
    assert small.get_submodule("1").normalized_shape == (8,) and small.get_parameter("1.weight").shape == (8,)
    assert small(torch.randn(5, 3)).shape == (5, 2)


def test_functional_layer_norm_ties_weight_and_bias_passed_as_inputs_to_the_last_dims():
    case = single_op(F.layer_norm, torch.randn(3, 5, 7), [7], torch.randn(7), torch.randn(7))
    assert case.rule.name == "layer_norm_function"
    assert whole_ties(case) == {(d("b", 0), d("op", 2)), (d("c", 0), d("op", 2))} | {(d("a", i), d("op", i))
                                                                                      for i in range(3)}
    assert case.apart(("b", 0), ("op", 1))
    assert normalized_dims(case) == [2]


def test_functional_layer_norm_over_two_dims_without_weight_normalizes_both():
    case = single_op(F.layer_norm, torch.randn(3, 5, 7), (5, 7))
    assert whole_ties(case) == {(d("a", i), d("op", i)) for i in range(3)}
    assert normalized_dims(case) == [1, 2]
    case = single_op(F.layer_norm, torch.randn(3, 5, 7), normalized_shape=[5, 7], weight=torch.randn(5, 7))
    assert {(d("b", 0), d("op", 1)), (d("b", 1), d("op", 2))} <= whole_ties(case)
    assert normalized_dims(case) == [1, 2]


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_with_batch_statistics_normalizes_every_dim_but_the_channels(training):
    """A weight standardised by ``F.batch_norm(training=True)`` (NF-Nets) mixes the slots it reduces over."""
    x, mean, var, weight = torch.randn(1, 4, 12), torch.zeros(4), torch.ones(4), torch.rand(4)
    case = single_op(F.batch_norm, x, mean, var, weight, None, training)
    assert case.rule.name == "batch_norm_function"
    assert normalized_dims(case) == ([0, 2] if training else [])
    aten = single_op(torch.ops.aten.batch_norm.default, x, weight, None, mean, var, training, 0.0, 1e-5, False)
    assert normalized_dims(aten) == ([0, 2] if training else [])
