"""Torchvision models beyond classifiers, built the way the tests and ``benchmarks/coverage_beyond.py`` use them.

Random weights (``helpers.randomize``), few classes, and the smallest inputs each model accepts.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision
from helpers import randomize


def detector(name: str, size: int) -> nn.Module:
    """A torchvision detector with random weights, 3 classes; resizing images to ``size`` (SSDs: their own size)."""
    sizes = {} if name.startswith("ssd") else {"min_size": size, "max_size": size}
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=3, **sizes)
    return randomize(model)


def detector_size(name: str) -> int:
    """The image size at which every torchvision detector runs after backbone compression."""
    return 320 if name.startswith("ssd") else 160


def detection_images(size: int) -> list[torch.Tensor]:
    """Two images of different shapes, for a detector that resizes to ``size``."""
    return [torch.rand(3, size, size - 32), torch.rand(3, size - 32, size)]


def segmentation_model(name: str) -> torch.nn.Module:
    """A torchvision segmentation model with random weights, 5 classes, its auxiliary head where it has one."""
    aux = {} if name.startswith("lraspp") else {"aux_loss": True}
    return randomize(torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=5, **aux))


def video_model(name: str, **options) -> torch.nn.Module:
    """A torchvision video classifier with random weights and 7 classes (``options``: e.g. ``norm_layer``)."""
    return randomize(torchvision.models.get_model(name, weights=None, num_classes=7, **options))


def video_input(name: str) -> torch.Tensor:
    """The smallest clip each model accepts (S3D's head pools a fixed 2×7×7; MViT and Swin3D fix sizes)."""
    if name in ("mvit_v1_b", "mvit_v2_s"):
        return torch.randn(1, 3, 16, 224, 224)
    if name == "s3d":
        return torch.randn(1, 3, 16, 224, 224)
    if name.startswith("swin3d"):
        return torch.randn(1, 3, 4, 64, 64)
    return torch.randn(2, 3, 4, 16, 16)
