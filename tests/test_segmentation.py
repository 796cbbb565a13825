"""Segmentation models compress whole: dict outputs ({"out", "aux"}) keep their keys and shapes."""

import pytest
import torch
import torchvision
from helpers import compress_checked, parameter_count
from zoo import segmentation_model

import fxprune

ALL_MODELS = torchvision.models.list_models(module=torchvision.models.segmentation)


def _check(name: str, size: int = 32):
    model = segmentation_model(name)
    x = torch.randn(2, 3, size, size)
    small, analysis, plan, result = compress_checked(model, (x,), ratio=0.5)
    with torch.no_grad():
        got, want = small(x), model(x)
    assert isinstance(got, dict) and list(got) == list(want)
    assert all(got[k].shape == want[k].shape == (2, 5, size, size) for k in want)
    assert parameter_count(small) < 0.7 * parameter_count(model)
    return small, x


@pytest.fixture(scope="module")
def lraspp():
    return _check("lraspp_mobilenet_v3_large")


def test_segmentation_model_compresses_whole(lraspp):
    small, x = lraspp
    assert small(x)["out"].shape == (2, 5, 32, 32)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_segmentation_model_compresses_whole(name):
    _check(name)


def test_aspp_pooling_branch_leaves_the_backbone_prunable():
    """ASPP resizes its pooled branch to ``x.shape[-2:]``: that reads space, not the backbone's channels."""
    report = fxprune.analyze(segmentation_model("deeplabv3_mobilenet_v3_large"), torch.randn(1, 3, 64, 64))
    assert not any("used as a value" in g.frozen_reason for g in report.frozen)


def test_pruned_segmentation_model_exports_to_onnx(lraspp, tmp_path):
    small, x = lraspp
    result = fxprune.export_onnx(small, x[:1], tmp_path / "seg.onnx")
    assert result.relative < 1e-3
