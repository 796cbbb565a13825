"""Capture by torch.export: the same pruned model as FX where both apply, and models FX cannot trace."""

import pytest
import torch
import torch.nn as nn
import torchvision
from helpers import compress_checked, parameter_count, randomize

import fxprune


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_export_capture_prunes_exactly_as_fx_does(name):
    model = randomize(torchvision.models.get_model(name, weights=None, num_classes=11))
    x = torch.randn(2, 3, 32, 32)
    by_fx = fxprune.compress(model, x, ratio=0.5, round_to=1, capture="fx")
    by_export = fxprune.compress(model, x, ratio=0.5, round_to=1, capture="export")
    kept = [{(g.anchor, g.dim): g.keep for g in small.fxprune_plan.groups} for small in (by_fx, by_export)]
    assert kept[0] == kept[1] and len(kept[0]) > 5
    assert parameter_count(by_export) == parameter_count(by_fx) < parameter_count(model) / 3
    other_batch = torch.randn(5, 3, 32, 32)  # captured at batch 2: the batch dimension stays free
    torch.testing.assert_close(by_export(other_batch), by_fx(other_batch))


class SplitAndIterate(nn.Module):
    """The C2f pattern of Ultralytics' YOLO: ``list(x.chunk(2, 1))``, which FX cannot iterate."""

    def __init__(self):
        super().__init__()
        self.stem, self.branch = nn.Conv2d(3, 14, 3, padding=1), nn.Conv2d(7, 7, 3, padding=1)
        self.norm, self.head = nn.BatchNorm2d(21), nn.Conv2d(21, 5, 1)

    def forward(self, x):
        parts = list(self.stem(x).chunk(2, 1))
        parts.append(self.branch(parts[-1]))
        return self.head(torch.relu(self.norm(torch.cat(parts, 1))))


def test_auto_capture_falls_back_to_export_and_the_oracle_holds():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(fxprune.TraceError, match="torch.fx cannot trace"):
        fxprune.compress(SplitAndIterate(), x, capture="fx")
    small, analysis, plan, result = compress_checked(randomize(SplitAndIterate()), (x,), ratio=0.5)
    assert analysis.gm.meta["fxprune_capture"] == "export" and result.exact
    assert parameter_count(small) < parameter_count(SplitAndIterate())
    assert small(torch.randn(3, 3, 8, 8)).shape == (3, 5, 8, 8)


def test_a_pruned_exported_model_exports_to_onnx_with_parity(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    small = fxprune.compress(randomize(SplitAndIterate()), x, ratio=0.5, round_to=1)
    assert fxprune.export_onnx(small, x, tmp_path / "small.onnx").relative < 1e-4


def test_a_saved_plan_reapplies_to_a_model_captured_by_export(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    model = randomize(SplitAndIterate())
    small = fxprune.compress(model, x, ratio=0.5, round_to=1)
    fxprune.save(small, tmp_path / "small.fxprune")
    again = fxprune.load(tmp_path / "small.fxprune", randomize(SplitAndIterate()))
    torch.testing.assert_close(again(x), small(x))


class BranchesOnValues(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        y = self.conv(x)
        return y if y.sum() > 0 else -y  # data-dependent: neither capture can follow it


def test_when_neither_capture_works_one_error_says_what_each_said():
    with pytest.raises(fxprune.TraceError, match="neither capture.*torch.fx cannot trace.*torch.export cannot"):
        fxprune.compress(BranchesOnValues(), torch.randn(2, 3, 4, 4))


def test_an_unknown_capture_is_named():
    with pytest.raises(fxprune.InputError, match="capture: expected one of"):
        fxprune.analyze(SplitAndIterate(), torch.randn(1, 3, 8, 8), capture="dynamo")


class Regions(nn.Module):
    """A forward with an autocast-off region (shared by two calls) and a no-grad one, as timm's
    EfficientViT and Gemma-4 write them: export wraps each in a higher-order op."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 4, 1)

    def attend(self, x):
        with torch.autocast("cpu", enabled=False):
            return torch.relu(x) * 2

    def forward(self, x):
        x = self.attend(self.a(x))
        with torch.no_grad():
            x = x + 1
        return self.c(self.attend(self.b(x)))


def test_autocast_and_grad_mode_regions_are_inlined_and_their_ops_pruned():
    model = randomize(Regions()).eval()
    x = torch.randn(2, 3, 8, 8)
    gm = fxprune.pipeline.traced(model, (x,), capture="export")
    assert not any("higher_order" in str(type(n.target)) or "Wrap" in type(n.target).__name__
                   for n in gm.graph.nodes if n.op == "call_function")
    small, analysis, plan, result = compress_checked(model.double(), (x.double(),), ratio=0.5, capture="export")
    assert result.exact and plan.removed_channels >= 16
