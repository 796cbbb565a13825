"""Detectors: their backbone is compressed in place; the detector still takes images and returns boxes."""

import pytest
import torch
import torch.nn as nn
import torchvision
from helpers import compress_checked, parameter_count, randomize
from zoo import detection_images, detector, detector_size

import fxprune

ALL_MODELS = torchvision.models.list_models(module=torchvision.models.detection)


def _check(name: str, size: int):
    model = detector(name, size)
    images = detection_images(size)
    backbone_input = model.transform(images)[0].tensors  # what the backbone receives
    compress_checked(model.backbone, (backbone_input,), ratio=0.5)  # the oracle, on the backbone alone
    before = parameter_count(model)
    with torch.no_grad():
        want = model.backbone(backbone_input)
    returned = fxprune.compress_submodule(model, "backbone", backbone_input, ratio=0.5)
    assert returned is model and isinstance(model.backbone, torch.fx.GraphModule)
    assert parameter_count(model) < before
    with torch.no_grad():
        got = model.backbone(backbone_input)
        detections = model(images)
    assert list(got) == list(want) and all(got[k].shape == want[k].shape for k in want)  # the FPN/head contract
    assert len(detections) == 2
    assert all(d["boxes"].dim() == 2 and d["boxes"].shape[1] == 4 and len(d["labels"]) == len(d["boxes"])
               for d in detections)


def test_fasterrcnn_backbone_is_compressed_in_place():
    _check("fasterrcnn_mobilenet_v3_large_320_fpn", 64)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_detector_runs_after_backbone_compression(name):
    _check(name, detector_size(name))


class Wrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 7, 3, padding=1), nn.ReLU(), nn.Conv2d(7, 5, 3, padding=1))
        self.body.out_channels = 5
        self.head = nn.Conv2d(5, 2, 1)

    def forward(self, x):
        return self.head(self.body(x)).sum()


def test_submodule_keeps_its_outputs_and_plain_attributes():
    model = randomize(Wrapper())
    fxprune.compress_submodule(model, "body", torch.randn(2, 3, 8, 8), ratio=0.5, round_to=1)
    assert model.body.out_channels == 5 and model.body.get_submodule("0").out_channels < 7
    assert model.head.in_channels == 5 and model(torch.randn(2, 3, 8, 8)).dim() == 0


def test_dotted_names_reach_nested_submodules():
    model = randomize(Wrapper())
    fxprune.compress_submodule(model, "body", torch.randn(1, 3, 8, 8), ratio=0.0)
    outer = nn.Sequential(randomize(Wrapper()))
    fxprune.compress_submodule(outer, "0.body", torch.randn(1, 3, 8, 8), ratio=0.5, round_to=1)
    assert isinstance(outer[0].body, torch.fx.GraphModule)


@pytest.mark.parametrize("name", ["", "neck", "body.9", 3])
def test_a_missing_submodule_is_named(name):
    with pytest.raises(fxprune.InputError, match="name"):
        fxprune.compress_submodule(Wrapper(), name, torch.randn(1, 3, 8, 8))
