"""The benchmark's baselines: CIFAR-style ResNet-20/32/56 (He et al. 2016, 1×1-conv shortcuts) and a small VGG."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs: three stages of ``n`` blocks, widths w, 2w, 4w."""

    def __init__(self, depth: int = 20, width: int = 16, classes: int = 10):
        super().__init__()
        blocks = (depth - 2) // 6
        self.conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        layers, cin = [], width
        for stage, cout in enumerate([width, 2 * width, 4 * width]):
            for i in range(blocks):
                layers.append(Block(cin, cout, 2 if stage and i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class SmallVGG(nn.Module):
    """Conv-BN-ReLU stacks with max-pooling, global average pooling and one linear layer."""

    def __init__(self, widths=(32, 32, "M", 64, 64, "M", 128, 128, "M"), classes: int = 10):
        super().__init__()
        layers, cin = [], 3
        for width in widths:
            if width == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
                cin = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


MODELS = {  # narrow variants train to >90% on the generated task in minutes on one CPU core
    "resnet20-w8": lambda: CifarResNet(20, width=8),
    "vgg-small": lambda: SmallVGG((16, 16, "M", 32, 32, "M", 64, 64, "M")),
    "resnet20": lambda: CifarResNet(20),
    "resnet32": lambda: CifarResNet(32),
    "resnet56": lambda: CifarResNet(56),
}
