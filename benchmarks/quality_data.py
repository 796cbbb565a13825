"""A generated 10-class 32×32 RGB task for the quality benchmark (no download needed).

Five textures (oriented sine gratings: 5 orientations, two frequencies) exist; a class is an
unordered *pair* of them (C(5, 2) = 10 classes). Each image holds two soft-edged patches, one per
texture of its pair, at random places, with random phase, colour and contrast, on a background of
coloured noise, plus a faint distractor grating. Telling the classes apart needs several texture
detectors and their combination, so a narrow or carelessly pruned network loses accuracy, yet a
CIFAR-style ResNet learns it to well above 90% in a few CPU minutes.

``--data digits`` in ``quality.py`` uses real images instead: scikit-learn's copy of the UCI
handwritten digits (1,797 8×8 scans, shipped inside the package, no download), upsampled to 32×32;
``--data cifar10 --root PATH`` uses torchvision's CIFAR-10 from a local folder.
"""

from __future__ import annotations

import itertools
import math

import torch

SIZE = 32
PAIRS = list(itertools.combinations(range(5), 2))
ANGLES = [k * math.pi / 5 for k in range(5)]
FREQUENCIES = [0.55, 0.9, 0.55, 0.9, 0.55]  # radians per pixel, alternating so neighbours differ twice


def _grating(n: int, texture: torch.Tensor, generator) -> torch.Tensor:
    """(n, 32, 32) gratings of the given texture ids, random phase and a small jitter of angle."""
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    angle = torch.tensor(ANGLES)[texture] + 0.08 * torch.randn(n, generator=generator)
    freq = torch.tensor(FREQUENCIES)[texture] * (1 + 0.08 * torch.randn(n, generator=generator))
    phase = 2 * math.pi * torch.rand(n, generator=generator)
    along = xs[None] * torch.cos(angle)[:, None, None] + ys[None] * torch.sin(angle)[:, None, None]
    return torch.sin(freq[:, None, None] * along + phase[:, None, None])


def _window(n: int, generator, radius: float = 7.0) -> torch.Tensor:
    """Soft circular patches at random centres."""
    ys, xs = torch.meshgrid(torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32),
                            indexing="ij")
    centre = 6 + (SIZE - 12) * torch.rand(n, 2, generator=generator)
    distance = (xs[None] - centre[:, 0, None, None]) ** 2 + (ys[None] - centre[:, 1, None, None]) ** 2
    return torch.exp(-distance / (2 * radius**2))


def _colour(n: int, generator) -> torch.Tensor:
    return (0.4 + 0.6 * torch.rand(n, 3, generator=generator))[:, :, None, None]


def generate(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, 3, 32, 32), roughly zero-mean, and their labels in 0..9."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(PAIRS), (n,), generator=generator)
    pairs = torch.tensor(PAIRS)[labels]
    images = 0.35 * torch.randn(n, 3, SIZE, SIZE, generator=generator)
    for slot in range(2):
        contrast = 0.6 + 0.6 * torch.rand(n, 1, 1, 1, generator=generator)
        patch = _grating(n, pairs[:, slot], generator) * _window(n, generator)
        images += contrast * _colour(n, generator) * patch[:, None]
    distractor = torch.randint(0, 5, (n,), generator=generator)
    images += 0.25 * _colour(n, generator) * _grating(n, distractor, generator)[:, None]
    return images, labels


def cifar10(root: str) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """CIFAR-10 from a local copy, normalised, as tensors: (train, test)."""
    import numpy as np
    import torchvision

    def load(train: bool):
        dataset = torchvision.datasets.CIFAR10(root, train=train, download=False)
        x = torch.tensor(np.asarray(dataset.data), dtype=torch.float32).permute(0, 3, 1, 2) / 255
        mean, std = torch.tensor([0.491, 0.482, 0.447]), torch.tensor([0.247, 0.243, 0.262])
        return (x - mean[:, None, None]) / std[:, None, None], torch.tensor(dataset.targets)

    return load(True), load(False)


def digits(test: int, seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The UCI handwritten digits (``sklearn.datasets.load_digits``) as (n, 3, 32, 32) images, zero-mean
    and unit-variance, split at random into (train, test) with ``test`` test images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = ((x - x.mean()) / x.std()).expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train, held_out = order[test:], order[:test]
    return (x[train], y[train]), (x[held_out], y[held_out])
