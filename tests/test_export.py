"""ONNX export: PyTorch == ONNX Runtime on pruned models of several families, and the failure paths."""

import functools

import numpy as np
import pytest
import torch
import torchvision
from helpers import randomize
from models import ChannelShuffle, Concat, Grouped, SqueezeExcite

import fxprune
from fxprune.deploy import export

FAMILIES = {"resnet18": 32, "mobilenet_v3_small": 64, "shufflenet_v2_x0_5": 64}


def _pruned(model, size, ratio=0.5):
    x = torch.randn(2, 3, size, size)
    return fxprune.compress(randomize(model), x, ratio=ratio, round_to=8), x[:1]


@functools.lru_cache(maxsize=None)
def _pruned_family(name):
    return _pruned(torchvision.models.get_model(name), FAMILIES[name])


@pytest.fixture
def resnet():
    return _pruned_family("resnet18")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_pruned_family_exports_and_matches_onnx_runtime(name, tmp_path):
    small, x = _pruned_family(name)
    result = fxprune.export_onnx(small, x, tmp_path / "small.onnx")
    assert result.relative < export.TOLERANCE and result.exporter == "torchscript"
    assert result.output_scale > 0 and result.max_abs_diff <= result.output_scale * export.TOLERANCE


def test_pruned_swin3d_window_attention_exports(tmp_path):
    """The 3-D window attention the rewrite installs traces into ONNX and matches ONNX Runtime."""
    x = torch.randn(1, 3, 4, 32, 32)
    small = fxprune.compress(randomize(torchvision.models.video.swin3d_t(num_classes=5)), x, ratio=0.5)
    result = fxprune.export_onnx(small, x, tmp_path / "small.onnx")
    assert result.relative < export.TOLERANCE


@pytest.mark.parametrize("model", [SqueezeExcite, Concat, Grouped, ChannelShuffle], ids=lambda m: m.__name__)
def test_hand_written_patterns_export(model, tmp_path):
    small, x = _pruned(model(), 8)
    assert fxprune.export_onnx(small, (x,), tmp_path / "m.onnx").relative < export.TOLERANCE


def test_dynamic_batch_runs_other_batch_sizes(tmp_path, resnet):
    small, x = resnet
    fxprune.export_onnx(small, x, tmp_path / "r.onnx", dynamic_batch=True)
    batch = torch.randn(3, 3, 32, 32)
    (got,) = export.run_session(export.session(tmp_path / "r.onnx"), (batch,))
    with torch.no_grad():
        want = small(batch).numpy()
    assert got.shape == (3, 1000) and np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_fixed_batch_export_rejects_other_batch_sizes(tmp_path, resnet):
    small, x = resnet
    fxprune.export_onnx(small, x, tmp_path / "r.onnx", dynamic_batch=False)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        export.run_session(export.session(tmp_path / "r.onnx"), (torch.randn(3, 3, 32, 32),))


def test_disagreement_beyond_tolerance_raises(tmp_path, monkeypatch, resnet):
    small, x = resnet
    real = export.run_session
    monkeypatch.setattr(export, "run_session", lambda sess, inputs: [o + 1e-2 for o in real(sess, inputs)])
    with pytest.raises(fxprune.ExportError, match="disagrees with PyTorch"):
        fxprune.export_onnx(small, x, tmp_path / "r.onnx")


class OddPool(torch.nn.Module):
    """An adaptive pool whose output size does not divide its input: the TorchScript exporter refuses."""

    def __init__(self):
        super().__init__()
        self.conv, self.pool = torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(3)

    def forward(self, x):
        return self.pool(self.conv(x)).flatten(1)


def test_exporter_failure_names_the_exporter_and_the_reason(tmp_path):
    with pytest.raises(fxprune.ExportError, match="torchscript: .*adaptive_avg_pool2d"):
        fxprune.export_onnx(OddPool().eval(), torch.randn(1, 3, 6, 6), tmp_path / "o.onnx", exporter="torchscript")


def test_auto_falls_back_to_the_dynamo_exporter(tmp_path):
    result = fxprune.export_onnx(OddPool().eval(), torch.randn(1, 3, 6, 6), tmp_path / "o.onnx")
    assert result.exporter == "dynamo" and result.relative < export.TOLERANCE


def test_unknown_exporter_is_an_error(tmp_path):
    with pytest.raises(fxprune.ExportError, match="exporter"):
        fxprune.export_onnx(OddPool().eval(), torch.randn(1, 3, 6, 6), tmp_path / "o.onnx", exporter="tflite")


def test_export_leaves_training_mode_as_it_was(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.BatchNorm2d(5)).train()
    fxprune.export_onnx(model, torch.randn(1, 3, 8, 8), tmp_path / "t.onnx")
    assert model.training and model[1].training


def test_profile_splits_convolutions_by_kind(tmp_path):
    small, x = _pruned_family("mobilenet_v3_small")
    fxprune.export_onnx(small, x, tmp_path / "m.onnx")
    kinds = export.profile_ops(tmp_path / "m.onnx", (x,), threads=1, runs=2)
    assert {"Conv depthwise/grouped", "Conv 1x1"} <= set(kinds) and all(v >= 0 for v in kinds.values())
