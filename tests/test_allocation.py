"""MACs budgets, the least-squares refit, BatchNorm recalibration and fine-tuning."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize
from models import Chain, Residual

import fxprune
from fxprune.errors import InputError
from fxprune.graph.inputs import as_batches
from fxprune.graph.measure import count_macs
from fxprune.recover.batchnorm import recalibrate_bn

pytestmark = pytest.mark.usefixtures("one_thread")


class Wide(torch.nn.Module):
    """Enough channels for a MACs budget to be met closely (prime widths, a residual)."""

    def __init__(self):
        super().__init__()
        conv = lambda i, o: torch.nn.Conv2d(i, o, 3, padding=1)
        self.stem, self.a, self.b, self.c = conv(3, 31), conv(31, 37), conv(37, 31), conv(31, 41)
        self.bn = torch.nn.BatchNorm2d(37)
        self.fc = torch.nn.Linear(41, 11)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.b(torch.relu(self.bn(self.a(x))))
        return self.fc(torch.relu(self.c(x)).mean((2, 3)))


def data(n=16, size=8):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=generator), torch.randint(0, 11, (n,), generator=generator)


def macs_fraction(small, model, x) -> float:
    return count_macs(small, (x[:1],)) / count_macs(model, (x[:1],))


@pytest.mark.parametrize("method", ["l1", "taylor", "reconstruction"])
@pytest.mark.parametrize("target", [0.5, 0.3])
def test_target_macs_is_reached_within_two_percent(method, target):
    model = randomize(Wide())
    x, y = data()
    small = fxprune.compress(model, (x, y), method=method, target_macs=target, round_to=1)
    assert abs(macs_fraction(small, model, x) - target) <= 0.02 * target


def test_target_macs_with_mlacp_uses_one_ratio_for_every_group():
    model = randomize(Wide())
    x, y = data()
    small = fxprune.compress(model, (x, y), method=fxprune.MLACP(steps=1, progress=False), target_macs=0.5,
                               round_to=1)
    assert abs(macs_fraction(small, model, x) - 0.5) <= 0.01
    fractions = {round(len(g.keep) / g.size, 1) for g in small.fxprune_plan.groups}
    assert len(fractions) == 1


def test_unreachable_target_says_the_best_reachable():
    model = randomize(Chain())
    with pytest.raises(InputError, match="smallest this model can get"):
        fxprune.compress(model, data()[0], target_macs=0.01, ignore=["c1", "c2"])
    with pytest.raises(InputError, match="target_macs"):
        fxprune.compress(model, data()[0], target_macs=1.5)


def test_refit_after_any_criterion_lowers_the_output_error():
    model = randomize(Wide())
    x, y = data(64)
    plain = fxprune.compress(model, (x, y), ratio=0.5, method="l1")
    refit = fxprune.compress(model, (x, y), ratio=0.5, method="l1", refit=True)
    assert plain.fxprune_plan.to_json().replace('"refit": false', "") == \
        refit.fxprune_plan.to_json().replace('"refit": true', "")
    with torch.no_grad():
        error = lambda small: float((small(x) - model(x)).pow(2).mean())
        assert error(refit) < error(plain)


def test_recalibrate_bn_reestimates_statistics_and_is_skipped_when_nothing_is_removed():
    model = randomize(Chain())
    x, _ = data()
    unchanged = fxprune.compress(model, x, ratio=0.0, recalibrate_bn=True)
    torch.testing.assert_close(unchanged.b1.running_mean, model.b1.running_mean)
    pruned = fxprune.compress(model, x, ratio=0.4, recalibrate_bn=True)
    with torch.no_grad():
        features = pruned.c1(x)
    torch.testing.assert_close(pruned.b1.running_mean, features.mean((0, 2, 3)), atol=1e-5, rtol=1e-4)
    assert not pruned.b1.training and pruned.b1.momentum == model.b1.momentum


def test_recalibrate_bn_leaves_models_without_batchnorm_alone():
    assert recalibrate_bn(torch.nn.Linear(3, 3), as_batches(torch.randn(2, 3))) == 0


def test_finetune_clips_the_gradient_norm():
    model = randomize(Residual())
    x, y = data(32)
    small = fxprune.compress(model, (x, y), ratio=0.5)
    before = torch.cat([p.detach().flatten() for p in small.parameters()])

    def moved(**options):
        tuned = fxprune.finetune(small, [(x, y * 0)], max_steps=1, lr=1.0, momentum=0.0, weight_decay=0.0, **options)
        return (torch.cat([p.detach().flatten() for p in tuned.parameters()]) - before).norm().item()

    assert moved(max_grad_norm=1e-3) == pytest.approx(1e-3, rel=1e-3)  # one SGD step of lr 1 moves by the clipped norm
    assert moved(max_grad_norm=None) > 1e-2
    for bad in (0, -1.0, "5", float("nan")):
        with pytest.raises(InputError, match="max_grad_norm"):
            fxprune.finetune(small, [(x, y)], max_grad_norm=bad)


def test_finetune_with_distillation_trains_a_copy():
    model = randomize(Residual())
    x, y = data(32)
    small = fxprune.compress(model, (x, y), ratio=0.5)
    before = {k: v.clone() for k, v in small.state_dict().items()}
    tuned = fxprune.finetune(small, [(x, y)], teacher=model, epochs=3, lr=0.01)
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
    assert not tuned.training
    unlabeled = fxprune.finetune(small, x, teacher=model, max_steps=1)
    assert unlabeled(x).shape == model(x).shape
    with pytest.raises(InputError, match="teacher"):
        fxprune.finetune(small, x)


def test_count_macs_takes_a_model_whose_parameters_require_grad_and_leaves_their_flags():
    """timm's PiT and CaiT made torch's FLOP counter fail ("Expected gradient function to be set")."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("pit_ti_224", pretrained=False, num_classes=10).eval()
    model.head.weight.requires_grad_(False)
    assert count_macs(model, (torch.randn(1, 3, 224, 224),)) > 0
    assert not model.head.weight.requires_grad and model.patch_embed.conv.weight.requires_grad
