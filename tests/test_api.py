"""The public API's promises: clear errors, the user's model untouched, ignore respected, plans re-applied."""

import copy

import pytest
import torch
import torch.nn as nn
import torchvision
from helpers import parameter_count, randomize
from models import Chain, Residual

import fxprune
from fxprune.graph.outputs import compare


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "half", None])
def test_bad_ratio_is_named(ratio):
    with pytest.raises(fxprune.InputError, match="ratio"):
        fxprune.compress(Chain(), torch.randn(1, 3, 8, 8), ratio=ratio)


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(fxprune.InputError, match="l1"):
        fxprune.compress(Chain(), torch.randn(1, 3, 8, 8), method="nope")


def test_inputs_the_model_rejects_are_reported_as_data():
    with pytest.raises(fxprune.InputError, match="data"):
        fxprune.compress(Chain(), torch.randn(1, 4, 8, 8))


@pytest.mark.parametrize("data", [torch.empty(0, 3, 8, 8), [], torch.full((1, 3, 8, 8), float("nan"))])
def test_empty_or_non_finite_data_is_refused(data):
    with pytest.raises(fxprune.InputError, match="data"):
        fxprune.compress(Chain(), data)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 5, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.c(x)
        return self.c(-x)


def test_untraceable_model_names_the_line_and_the_ways_out():
    with pytest.raises(fxprune.TraceError) as error:
        fxprune.compress(Untraceable(), torch.randn(1, 3, 8, 8))
    message = str(error.value)
    assert "x.sum() > 0" in message and "leaf" in message and "submodule" in message


def test_user_model_is_not_modified_even_in_training_mode():
    model = randomize(torchvision.models.resnet18()).train()
    before, flags = _state(model)
    fxprune.compress(model, torch.randn(4, 3, 32, 32), ratio=0.5, method="taylor")
    after, flags_after = _state(model)
    assert flags == flags_after
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def test_result_does_not_depend_on_training_mode():
    model = randomize(Residual())
    x = torch.randn(2, 3, 8, 8)
    a = fxprune.compress(model.eval(), x, ratio=0.5).eval()
    b = fxprune.compress(copy.deepcopy(model).train(), x, ratio=0.5).eval()
    assert torch.allclose(a(x), b(x))


def test_ratio_zero_returns_an_equivalent_model():
    model = randomize(torchvision.models.mobilenet_v3_small())
    x = torch.randn(2, 3, 64, 64)
    small = fxprune.compress(model, x, ratio=0.0)
    assert parameter_count(small) == parameter_count(model)
    assert compare(small, model, (x,))[0] < 1e-5


def test_ignored_modules_keep_their_shapes():
    model = randomize(torchvision.models.resnet18())
    small = fxprune.compress(model, torch.randn(1, 3, 32, 32), ratio=0.5, ignore=["layer1.0.conv1", "fc"])
    for name in ("layer1.0.conv1", "fc"):
        for (key, p), (_, q) in zip(model.get_submodule(name).named_parameters(),
                                     small.get_submodule(name).named_parameters()):
            assert p.shape == q.shape, f"{name}.{key} was pruned although ignored"
    assert parameter_count(small) < parameter_count(model)


def test_ignore_of_a_missing_module_is_an_error():
    with pytest.raises(fxprune.InputError, match="ignore"):
        fxprune.compress(Chain(), torch.randn(1, 3, 8, 8), ignore=["nothing_here"])


def test_plan_round_trips_through_json_and_reapplies():
    model = randomize(torchvision.models.resnet18())
    x = torch.randn(1, 3, 32, 32)
    small = fxprune.compress(model, x, ratio=0.5)
    plan = fxprune.Plan.from_json(small.fxprune_plan.to_json())
    again = fxprune.apply_plan(copy.deepcopy(model), x, plan)
    assert compare(again, small, (x,))[0] < 1e-5
    assert "keep" in str(plan)


def test_data_forms_are_accepted():
    model = randomize(Chain())
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 11, (4,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=2)
    for data in (x, (x, y), [x, x], loader):
        assert fxprune.compress(model, data, ratio=0.5, method="taylor")(x).shape == (4, 11)


def test_analyze_reports_groups_and_frozen_reasons():
    report = fxprune.analyze(torchvision.models.resnet18(), torch.randn(1, 3, 32, 32))
    text = str(report)
    assert "prunable groups" in text and "output of the graph" in text
    assert report.why_frozen("fc") and report.prunable_channels > 0
