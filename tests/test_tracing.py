"""Shape recording: the meta run gives the real run's shapes, falls back when values are needed,
and keeps the checks that catch a badly rewritten module."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fxprune.errors import RewriteError
from fxprune.graph.capture import trace
from fxprune.graph.shapes import MetaShapePropagation, ShapePropagation, record_shapes, tensor_shapes
from fxprune.rewrite.apply import verify_shapes


class NormsAndActivations(nn.Module):
    """Every module type the meta run answers without its kernel, between convs of prime widths."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 7, 3)
        self.bn = nn.BatchNorm2d(7)
        self.acts = nn.Sequential(nn.ReLU(), nn.ReLU6(), nn.Hardswish(), nn.Hardsigmoid(), nn.SiLU(), nn.GELU(),
                                  nn.Sigmoid(), nn.Tanh(), nn.Dropout(), nn.Identity())
        self.norm = nn.LayerNorm(11)
        self.linear = nn.Linear(11, 5)

    def forward(self, x):
        x = self.acts(self.bn(self.conv(x)))
        return self.linear(self.norm(x.flatten(2)[..., :11]))


class NeedsValues(nn.Module):
    """A forward that reads a value: impossible on meta tensors, so the real run must decide."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        y = self.conv(x)
        return y * y.abs().max().item()


def _shapes(gm):
    return {n.name: tensor_shapes(n) for n in gm.graph.nodes}


@pytest.mark.parametrize("training", [False, True])
def test_meta_run_records_the_real_shapes(training):
    model = NormsAndActivations().train(training)
    inputs = (torch.randn(2, 3, 13, 13),)
    gm = trace(model)
    with torch.no_grad():
        ShapePropagation(gm).propagate(*inputs)
    real = _shapes(gm)
    for node in gm.graph.nodes:
        node.meta.pop("tensor_meta", None)
    with torch.no_grad():
        MetaShapePropagation(gm).propagate(*inputs)
    assert _shapes(gm) == real
    assert real["linear"] == {(): torch.Size([2, 7, 5])}


def test_meta_run_leaves_the_model_alone():
    model = NormsAndActivations().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record_shapes(trace(model), (torch.randn(2, 3, 13, 13),))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included
    assert all(t.device.type == "cpu" for t in after.values())


class NeedsValuesInTraining(nn.Module):
    """A value read after a BatchNorm: the real run in training mode would update its statistics."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 5, 1), nn.BatchNorm2d(5)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y * y.abs().max().item()


def test_real_run_leaves_the_model_alone():
    model = NeedsValuesInTraining().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gm = trace(model)
    record_shapes(gm, (torch.randn(2, 3, 4, 4),))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # statistics and counter
    assert _shapes(gm)["mul"] == {(): torch.Size([2, 5, 4, 4])}


def test_values_needed_falls_back_to_a_real_run():
    gm = trace(NeedsValues())
    with pytest.raises(RuntimeError, match="meta"):
        with torch.no_grad():
            MetaShapePropagation(gm).propagate(torch.randn(1, 3, 4, 4))
    record_shapes(gm, (torch.randn(1, 3, 4, 4),))
    assert _shapes(gm)["mul"] == {(): torch.Size([1, 5, 4, 4])}


@pytest.mark.parametrize("module_name, attribute", [("bn", "running_var"), ("norm", "weight")])
def test_shape_check_catches_a_norm_left_at_the_old_width(module_name, attribute):
    """A rewrite that forgot to slice one statistic of a norm must fail its check, not pass on meta."""
    model = NormsAndActivations().eval()
    gm = trace(model)
    module = gm.get_submodule(module_name)
    wrong = getattr(module, attribute).detach()[:-1].clone()
    if attribute in module._parameters:
        wrong = nn.Parameter(wrong)
    setattr(module, attribute, wrong)
    with pytest.raises(RewriteError, match=module_name):
        verify_shapes(gm, (torch.randn(1, 3, 13, 13),), {})
