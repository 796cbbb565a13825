"""The public API's promises: clear errors, the user's model untouched, ignore respected, plans re-applied."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from helpers import parameter_count, randomize
from models import Chain, Residual

import fxprune
from fxprune.graph.outputs import compare


def _bits(tensor: torch.Tensor) -> tuple:
    """A tensor's dtype, shape and bytes: equal bits, not just equal values (-0.0 is not 0.0)."""
    return tensor.dtype, tuple(tensor.shape), tensor.detach().reshape(-1).clone().view(torch.uint8)


def _snapshot(model: nn.Module) -> tuple[dict, list[bool]]:
    """Every parameter and buffer (counters included), and every module's mode."""
    named = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return {name: _bits(t) for name, t in named}, [m.training for m in model.modules()]


def _assert_unchanged(model: nn.Module, before: tuple[dict, list[bool]]) -> None:
    tensors, flags = _snapshot(model)
    assert flags == before[1] and tensors.keys() == before[0].keys()
    changed = [name for name, (dtype, shape, data) in tensors.items()
               if (dtype, shape) != before[0][name][:2] or not torch.equal(data, before[0][name][2])]
    assert not changed, f"changed: {changed}"
    assert all(p.grad is None for p in model.parameters())


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
    before = _snapshot(model)
    fxprune.compress(model, torch.randn(4, 3, 32, 32), ratio=0.5, method="taylor")
    _assert_unchanged(model, before)


class BatchNormAct(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d`` in brief: a BatchNorm that FX traces through (it is no ``torch.nn``
    leaf), whose forward reads ``self.training`` and counts batches in training mode."""

    def forward(self, x):
        if self.training:
            self.num_batches_tracked.add_(1)
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         self.momentum, self.eps)
        return F.relu(x)


class CountingNet(nn.Module):
    """Two conv-BatchNormAct blocks. With ``aux``, an auxiliary head in training mode (as GoogLeNet's),
    so that fxprune prunes the training-mode graph, whose batch norms update statistics when run."""

    def __init__(self, aux: bool = False):
        super().__init__()
        self.c1, self.n1 = nn.Conv2d(3, 16, 3, padding=1), BatchNormAct(16)
        self.c2, self.n2 = nn.Conv2d(16, 16, 3, padding=1), BatchNormAct(16)
        self.fc = nn.Linear(16, 10)
        self.aux = nn.Linear(16, 10) if aux else None

    def forward(self, x):
        h = self.n1(self.c1(x))
        y = self.fc(self.n2(self.c2(h)).mean((2, 3)))
        if self.training and self.aux is not None:
            return y, self.aux(h.mean((2, 3)))
        return y


def _labelled_batches():
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, 8, 8, generator=generator), torch.randint(0, 10, (4,), generator=generator))
            for _ in range(2)]


UNCHANGED_METHODS = {"l1": "l1", "taylor": "taylor", "reconstruction": "reconstruction",
                     "mlacp": fxprune.MLACP(steps=1, progress=False)}
OPTIONS = {"plain": {}, "refit-recalibrate": {"refit": True, "recalibrate_bn": True}}


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("method", UNCHANGED_METHODS)
@pytest.mark.parametrize("aux", [False, True], ids=["counting", "counting-aux"])
def test_compress_leaves_every_parameter_and_buffer_bit_for_bit(aux, method, options):
    model = randomize(CountingNet(aux)).train()
    before = _snapshot(model)
    small = fxprune.compress(model, _labelled_batches(), ratio=0.5, round_to=1, method=UNCHANGED_METHODS[method],
                             **OPTIONS[options])
    _assert_unchanged(model, before)
    assert parameter_count(small) < parameter_count(model)


@pytest.mark.parametrize("aux", [False, True], ids=["counting", "counting-aux"])
def test_analyze_and_apply_plan_leave_the_model_bit_for_bit(aux):
    model = randomize(CountingNet(aux)).train()
    x = torch.randn(2, 3, 8, 8)
    plan = fxprune.compress(copy.deepcopy(model), x, ratio=0.5, round_to=1).fxprune_plan
    before = _snapshot(model)
    fxprune.analyze(model, x)
    fxprune.apply_plan(model, x, plan)
    _assert_unchanged(model, before)


def test_compress_submodule_leaves_the_replaced_submodule_and_the_rest_bit_for_bit():
    original = randomize(CountingNet(aux=True)).train()
    outer = nn.Sequential(original, nn.Linear(10, 4)).train()
    before, head = _snapshot(original), _snapshot(outer[1])
    fxprune.compress_submodule(outer, "0", _labelled_batches()[0][0], ratio=0.5, round_to=1, refit=True,
                               recalibrate_bn=True)
    assert outer[0] is not original
    _assert_unchanged(original, before)
    _assert_unchanged(outer[1], head)


@pytest.mark.parametrize("name", ["test_efficientnet", "resnet10t"])  # BatchNormAct2d / plain BatchNorm2d
def test_a_timm_model_is_left_bit_for_bit(name):
    timm = pytest.importorskip("timm")
    model = randomize(timm.create_model(name, pretrained=False, num_classes=10)).train()
    before = _snapshot(model)
    x = torch.randn(2, 3, 64, 64)
    fxprune.compress(model, x, ratio=0.5, method="taylor", recalibrate_bn=True)
    fxprune.analyze(model, x)
    _assert_unchanged(model, before)


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


def test_the_default_method_is_mlacp_from_64_samples_and_l1_for_an_example():
    model = randomize(Chain())
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, 8, 8, generator=generator)
    assert fxprune.compress(model, example, ratio=0.5).fxprune_plan.info["method"] == "l1"
    batches = [torch.randn(32, 3, 8, 8, generator=generator) for _ in range(2)]
    assert fxprune.compress(model, batches[:1], ratio=0.5).fxprune_plan.info["method"] == "l1"  # 32 samples
    small = fxprune.compress(model, batches, ratio=0.5)
    assert small.fxprune_plan.info["method"] == "mlacp" and len(small.fxprune_log) == 2
