"""Ultralytics YOLO detectors built from their yaml with random weights (offline, nothing downloaded),
compressed whole by ``torch.export`` capture: the detect head's output contract is kept."""

import os

import pytest
import torch
from helpers import compress_checked, parameter_count

import fxprune

os.environ.setdefault("YOLO_OFFLINE", "1")  # no font or weight downloads, no network checks
tasks = pytest.importorskip("ultralytics.nn.tasks", reason="ultralytics is not installed (pip install ultralytics)")

CONFIGS = ["yolov8n.yaml", "yolo11n.yaml"]


def detector(config: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return tasks.DetectionModel(config, verbose=False).eval()


def structure(output):
    """The output's nesting with tensor shapes: ``(boxes and scores, {"boxes": ..., "feats": [...]})``."""
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, dict):
        return {key: structure(value) for key, value in output.items()}
    return type(output).__name__, [structure(value) for value in output]


@pytest.mark.parametrize("config", CONFIGS)
def test_a_yolo_detector_compresses_whole_and_keeps_its_output_contract(config):
    model, images = detector(config), torch.randn(4, 3, 64, 64)
    expected = model(images)  # a model that has run caches its anchors at this batch size
    state = {k: v.clone() for k, v in model.state_dict().items()}
    small = fxprune.compress(model, images, ratio=0.5)
    assert parameter_count(model) / parameter_count(small) >= 1.8
    assert structure(small(images)) == structure(expected)
    other = torch.randn(3, 3, 64, 64)  # another batch size: the anchors are built inside the graph
    assert structure(small(other)) == structure(model(other))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # the user's model as it was


@pytest.mark.parametrize("config", CONFIGS)
def test_a_pruned_yolo_equals_the_masked_original(config):
    model = detector(config).double()
    small, analysis, plan, result = compress_checked(model, (torch.randn(2, 3, 64, 64).double(),), ratio=0.5)
    assert result.exact and result.relative < 1e-9
    assert len(analysis.groups) >= 50


def test_a_pruned_yolo_exports_to_onnx_with_parity(tmp_path):
    model, images = detector("yolov8n.yaml"), torch.randn(2, 3, 64, 64)
    small = fxprune.compress(model, images, ratio=0.5)
    result = fxprune.export_onnx(small, images, tmp_path / "yolov8n.onnx")
    assert result.relative <= result.tolerance
