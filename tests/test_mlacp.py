"""MLACP: structure of its result, its losses, its failure modes, and the user's model left alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import randomize
from models import Chain, ChainFunctional, Residual

import fxprune
from fxprune.analysis.analyze import analyze_graph
from fxprune.analysis.sites import group_sites
from fxprune.choose.mlacp import MLACP
from fxprune.choose.mlacp.compensation import least_squares_start
from fxprune.choose.mlacp.losses import GramReference, as_maps, gram_loss, loss_parts, reconstruction_loss
from fxprune.choose.mlacp.masks import ChannelMasks
from fxprune.choose.refit import refit_layer
from fxprune.errors import FxpruneError, InputError
from fxprune.graph.partial_run import Prefixes, prefix_values
from fxprune.pipeline import evaluating, plan_and_rewrite, rewrite, traced
from fxprune.rewrite import oracle

pytestmark = pytest.mark.usefixtures("one_thread")


def data(seed=0, n=16, size=9):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=generator), torch.randint(0, 11, (n,), generator=generator)


def quick(**options) -> MLACP:
    return MLACP(steps=3, progress=False, **options)


@pytest.mark.parametrize("model_class", [Chain, ChainFunctional, Residual])
def test_mlacp_result_has_the_plan_shapes_and_refined_weights(model_class):
    model = randomize(model_class())
    x, y = data()
    small = fxprune.compress(model, (x, y), ratio=0.4, method=quick())
    reference = fxprune.apply_plan(model, x[:1], small.fxprune_plan)
    assert [p.shape for p in small.parameters()] == [p.shape for p in reference.parameters()]
    assert small.fxprune_plan.removed_channels > 0
    assert small(x).shape == model(x).shape
    assert len(small.fxprune_log) == len(small.fxprune_plan.groups)


def test_mlacp_keeps_the_masked_model_it_refined():
    """The rewrite of MLACP's working copy equals that copy with the removed channels zeroed."""
    model = randomize(Residual())
    x, y = data()
    method = quick()
    choose_batches = fxprune.graph.inputs.as_batches((x, y))
    from fxprune.choose.selection import Chooser

    chooser = Chooser(method, choose_batches, (x[:1],), ratio=0.4, rewrite=rewrite)
    with evaluating(model):
        gm = traced(model, (x[:1],))
        small, analysis, plan = plan_and_rewrite(copy.deepcopy(gm), (x[:1],), chooser)
    result = oracle.check(analysis, plan, small, (x,))
    assert result.relative < 1e-4


def test_user_model_is_not_modified():
    model = randomize(Chain()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data()
    fxprune.compress(model, (x, y), ratio=0.5, method=quick(), refit=True, recalibrate_bn=True)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_ratio_zero_returns_an_equivalent_model():
    model = randomize(Chain())
    x, y = data()
    small = fxprune.compress(model, (x, y), ratio=0.0, method=quick(), recalibrate_bn=True)
    assert small.fxprune_plan.removed_channels == 0
    assert small.fxprune_log == []
    torch.testing.assert_close(small(x), model(x))


def test_reconstruction_and_gram_terms_are_zero_when_nothing_changed():
    feature = torch.randn(4, 5, 7, 7)
    assert reconstruction_loss(feature, feature.clone()) == 0
    assert float(gram_loss(GramReference.of(feature), feature.clone())) == pytest.approx(0, abs=1e-6)
    assert reconstruction_loss(feature, feature * 0.5) > 0
    assert float(gram_loss(GramReference.of(feature), torch.randn(4, 5, 7, 7))) > 0


def _explicit_grams(a: torch.Tensor, b: torch.Tensor) -> float:
    """Both Gram distances from the full C×C and P×P matrices of (N, C, P) maps."""
    a, b = a.double(), b.double()
    total = 0.0
    for ga, gb in [(a @ a.transpose(1, 2), b @ b.transpose(1, 2)), (a.transpose(1, 2) @ a, b.transpose(1, 2) @ b)]:
        total += float((ga - gb).pow(2).sum() / ga.pow(2).sum())
    return total


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 40, 2, 3)], ids=["channels-fewer", "positions-fewer"])
def test_gram_loss_matches_the_explicit_grams_on_either_side(shape):
    torch.manual_seed(0)
    a = torch.randn(shape)
    b = a + 0.3 * torch.randn(shape)
    expected = _explicit_grams(a.flatten(2), b.flatten(2))
    assert float(gram_loss(GramReference.of(a), b)) == pytest.approx(expected, rel=1e-4)


def test_gram_loss_takes_token_channels_from_the_last_dim():
    torch.manual_seed(0)
    a = torch.randn(2, 6, 4)  # (batch, tokens, channels) of a linear layer
    b = a + 0.3 * torch.randn(2, 6, 4)
    expected = _explicit_grams(a.transpose(1, 2), b.transpose(1, 2))
    assert float(gram_loss(GramReference.of(a, 2), b, 2)) == pytest.approx(expected, rel=1e-4)
    assert as_maps(a, 2).shape == (2, 4, 6)


def test_loss_parts_leave_out_the_terms_not_asked_for():
    feature = {"c": torch.randn(2, 3, 4, 4)}
    logits, labels = torch.randn(2, 5), torch.tensor([1, 2])
    parts = loss_parts(feature, {"c": feature["c"] + 1}, ["c"], logits, labels, None, False)
    assert parts.gram == 0 and parts.classification == 0 and parts.reconstruction > 0
    assert float(parts.joint(1.0, 1.0, ("reconstruction",))) == float(parts.reconstruction)


@pytest.mark.parametrize("terms", [("reconstruction",), ("reconstruction", "gram"),
                                   ("reconstruction", "classification")])
def test_ablations_run(terms):
    model = randomize(Chain())
    small = fxprune.compress(model, data(), ratio=0.4, method=quick(terms=terms))
    assert small.fxprune_plan.removed_channels > 0


def test_named_ablations_and_unknown_method():
    with pytest.raises(InputError, match="mlacp"):
        fxprune.compress(randomize(Chain()), data()[0], method="mlcap")
    with pytest.raises(ValueError, match="terms"):
        MLACP(terms=("reconstruction", "style"))


def test_labels_free_data_uses_the_baseline_predictions():
    model = randomize(Chain())
    small = fxprune.compress(model, data()[0], ratio=0.4, method=quick())
    assert small.fxprune_plan.removed_channels > 0


@pytest.mark.parametrize("selection", ["forward", "sensitivity"])
def test_nan_loss_stops_with_an_error_naming_the_group(selection):
    model = randomize(Chain())
    with pytest.raises(FxpruneError, match="c1.weight"):
        fxprune.compress(model, data(), ratio=0.4, method=quick(lr=1e30, selection=selection))


def test_refinement_does_not_increase_the_loss():
    model = randomize(Residual())
    small = fxprune.compress(model, data(), ratio=0.5, method=quick())
    assert all(r.loss_refined <= r.loss_pruned + 1e-9 for r in small.fxprune_log)
    assert all(np.isfinite([r.loss_refined for r in small.fxprune_log]))


def test_prefixes_moved_forward_equal_prefixes_computed_from_the_input():
    model = randomize(Residual())
    x, _ = data()
    with evaluating(model):
        gm = traced(model, (x[:1],))
    batches = [(x[:8],), (x[8:],)]
    prefixes = Prefixes(gm, batches)
    for start in range(0, len(gm.graph.nodes), 2):
        for env, inputs in zip(prefixes.at(start), batches):
            expected = prefix_values(gm, inputs, start)
            assert env.keys() == expected.keys()
            assert all(torch.equal(env[k], expected[k]) for k in expected)
    with pytest.raises(ValueError, match="before"):
        prefixes.at(1)


def _chain_read_by_c2():
    """Chain traced in inference, the site of the group c2 reads, two batches and c2's baseline outputs."""
    model = randomize(Chain())
    x, _ = data()
    with evaluating(model):
        gm = traced(model, (x[:1],))
    analysis = analyze_graph(gm)
    site = next(s for s in group_sites(analysis) if s.consumers and s.consumers[0].target == "c2")
    batches = fxprune.graph.inputs.as_batches([x[:8], x[8:]], None)
    features = [{"c2": gm.c2(gm.b1(gm.c1(b.inputs[0])).relu()).detach()} for b in batches]
    return gm, analysis, site, batches, features


def test_least_squares_start_equals_the_refit_of_the_consumer():
    """MLACP's closed-form start computes the consumer's inputs from the group's prefix: same refit."""
    gm, analysis, site, batches, features = _chain_read_by_c2()
    masks = ChannelMasks(analysis)
    masks.remove(site.group, np.array([0, 3]))
    expected = copy.deepcopy(gm)
    node = next(n for n in expected.graph.nodes if n.target == "c2")
    refit_layer(expected, node, expected.c2, np.array([1, 2, 4]), batches, [f["c2"] for f in features])
    envs = Prefixes(gm, [b.inputs for b in batches]).at(site.first_node)
    assert least_squares_start(gm, site, masks, batches, features, envs) == 1
    torch.testing.assert_close(gm.c2.weight, expected.c2.weight)


class Redundant(torch.nn.Module):
    """Three channels: two copies of a strong feature, and a weak one the output also needs."""

    def __init__(self):
        super().__init__()
        self.produce, self.read = torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 2, bias=False)
        with torch.no_grad():
            self.produce.weight.copy_(torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0.1, 0]]))
            self.read.weight.copy_(torch.tensor([[1.0, 1, 1], [1.0, 1, -1]]))

    def forward(self, x):
        return self.read(self.produce(x))


@pytest.mark.parametrize("selection, kept", [("forward", 2), ("sensitivity", 1)])
def test_forward_selection_scores_a_channel_against_those_already_chosen(selection, kept):
    """Keeping 2 of 3: once one copy of the strong feature is read, the other adds nothing and the weak
    one is what the output lacks. Forward selection, scoring at the pruned state, keeps it (and the
    least-squares refit then reconstructs the output, up to its ridge); one ranking with the whole group
    present sees no loss to lower and keeps the two strong copies."""
    model, x = Redundant().eval(), torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    method = MLACP(terms=("reconstruction",), rounds=2, steps=0, selection=selection, progress=False)
    small = fxprune.compress(model, x, ratio=1 / 3, method=method, round_to=1)
    (group,) = small.fxprune_plan.groups
    assert len(group.keep) == 2 and (2 in group.keep) == (kept == 2)
    error = (small(x) - model(x)).abs().max()
    assert (error < 0.05) == (kept == 2)  # the weak feature is 0.1 of an input: missing, it costs up to 0.3


def test_forward_selection_leaves_the_weights_it_read_as_they_were_before_it():
    model = randomize(Chain())
    x, y = data()
    with evaluating(model):
        analysis = analyze_graph(traced(model, (x[:1],)))
    site = group_sites(analysis)[0]
    gm = analysis.gm
    before = {name: gm.get_parameter(name).detach().clone() for name in site.params}
    from fxprune.choose.mlacp.forward import forward_select

    losses_seen = []

    def losses():
        out = gm(x)
        losses_seen.append(out.pow(2).mean())
        return [losses_seen[-1]]

    for p in gm.parameters():
        p.requires_grad_(True)
    scores = forward_select(analysis, site, keep=3, rounds=3, losses=losses, refit=lambda gate: None)
    assert len(losses_seen) == 3  # one scoring a round
    top = np.argsort(-scores, kind="stable")[:3]
    assert (scores[top] > 1).all() and (np.delete(scores, top) < 1).all()
    assert all(torch.equal(gm.get_parameter(name), value) for name, value in before.items())


def test_output_gradients_are_total_derivatives_at_named_nodes():
    from fxprune.graph.partial_run import output_gradients

    model = randomize(Residual()).double().eval()
    x = data()[0][:4].double()
    gm = traced(model, (x,))
    names = [n.name for n in gm.graph.nodes if n.op == "call_module"][:3]
    found = output_gradients(gm, (x,), set(names), lambda out: out.pow(2).sum())
    assert set(found) == set(names)
    for name in names:  # nudging the node's value changes the loss by the gradient's inner product
        direction = torch.randn_like(found[name])
        module = gm.get_submodule(next(n.target for n in gm.graph.nodes if n.name == name))

        def loss_nudged(step, module=module, direction=direction):
            handle = module.register_forward_hook(lambda m, i, out: out + step * direction)
            with torch.no_grad():
                value = gm(x).pow(2).sum()
            handle.remove()
            return value

        central = (loss_nudged(1e-4) - loss_nudged(-1e-4)) / 2e-4  # second-order terms cancel
        assert torch.isclose(central, (found[name] * direction).sum(), rtol=1e-4)


def test_the_local_cross_entropy_is_zero_at_the_baseline_and_grows_with_the_change():
    from fxprune.choose.mlacp.losses import local_classification

    base = {"c": torch.randn(4, 3, 5)}
    gradients = {"c": torch.randn(4, 3, 5)}
    assert local_classification(gradients, base, base, ["c"], 4) == 0
    small = local_classification(gradients, base, {"c": base["c"] + 0.1 * gradients["c"]}, ["c"], 4)
    large = local_classification(gradients, base, {"c": base["c"] + 0.2 * gradients["c"]}, ["c"], 4)
    assert 0 < small and torch.isclose(large, 4 * small)  # second order
    rows = {name: value.reshape(12, 5) for name, value in [("c", base["c"])]}  # (samples · tokens, channels)
    flat = local_classification({"c": gradients["c"].reshape(12, 5)}, rows,
                                {"c": (base["c"] + 0.1 * gradients["c"]).reshape(12, 5)}, ["c"], 4)
    assert torch.isclose(flat, small)  # the same per-sample sums, whatever the layout of the rows


def test_a_layer_is_judged_after_the_batchnorm_that_reads_it_in_inference():
    """Chain's c2 feeds b2 alone: its error is measured where b2 has put every channel on one scale;
    in training mode b2 normalises by the batch, and c2 is judged itself."""
    model = randomize(Chain())
    x, _ = data()
    with evaluating(model):
        analysis = analyze_graph(traced(model, (x[:1],)))
    site = next(s for s in group_sites(analysis) if s.consumers and s.consumers[0].target == "c2")
    assert [n.target for n in site.judged] == ["b2"] and site.channel_dims["b2"] == 1
    model.train()
    analysis = analyze_graph(traced(model, (x[:1],)))
    site = next(s for s in group_sites(analysis) if s.consumers and s.consumers[0].target == "c2")
    assert site.judged == site.consumers


@pytest.mark.parametrize("kept", ["rows", "inputs"])
def test_a_refit_from_what_was_kept_equals_a_refit_from_the_model(monkeypatch, kept):
    """Between selection rounds a fixed consumer is refit from its kept rows, or, when they are too
    many, from its kept inputs (the same rows drawn again): the weights equal a refit that runs the
    model again."""
    from fxprune.choose.mlacp import compensation

    if kept == "inputs":  # room for c2's inputs (2 × 8 × 5 × 9 × 9 values), not for its rows
        monkeypatch.setattr(compensation, "MAX_KEPT_VALUES", 10_000)
    gm, analysis, site, batches, features = _chain_read_by_c2()
    envs = Prefixes(gm, [b.inputs for b in batches]).at(site.first_node)
    cache = {}
    first = ChannelMasks(analysis)
    first.remove(site.group, np.array([0, 3]), site.consumer_members)
    least_squares_start(gm, site, first, batches, features, envs, cache)
    assert isinstance(cache["c2"](), list) == (kept == "rows")
    second = ChannelMasks(analysis)
    second.remove(site.group, np.array([1]), site.consumer_members)
    expected = copy.deepcopy(gm)
    node = next(n for n in expected.graph.nodes if n.target == "c2")
    refit_layer(expected, node, expected.c2, np.array([0, 2, 3, 4]), batches, [f["c2"] for f in features])
    least_squares_start(gm, site, second, batches, features, envs, cache)  # from what the first refit kept
    kept_columns = [0, 2, 3, 4]
    torch.testing.assert_close(gm.c2.weight[:, kept_columns], expected.c2.weight[:, kept_columns])
