"""The benchmark's baselines: CIFAR-style ResNet-20/32/56 (He et al. 2016, 1×1-conv shortcuts), a small VGG
and a small MobileNetV2 (inverted residuals, some with squeeze-excite)."""

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


class SqueezeExcite(nn.Module):
    """Channel gates from globally pooled features: pool, reduce, ReLU, expand, sigmoid, multiply."""

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x):
        gate = self.expand(F.relu(self.reduce(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(gate)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1×1 expand, 3×3 depthwise, optional squeeze-excite, 1×1 project (linear).

    The input is added back when the block keeps the shape (stride 1, same width).
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int, squeeze: bool):
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Sequential(nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                                       nn.BatchNorm2d(hidden), nn.ReLU6())
        self.squeeze = SqueezeExcite(hidden, max(8, hidden // 4)) if squeeze else nn.Identity()
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.project(self.squeeze(self.depthwise(self.expand(x))))
        return out + x if self.residual else out


class SmallMobileNet(nn.Module):
    """A MobileNetV2 for 32×32 inputs: a 3×3 stem, stages of inverted residuals, a 1×1 head, pooling, linear.

    ``stages``: (expansion, width, blocks, stride of the first block, squeeze-excite) per stage.
    """

    def __init__(self, stem: int = 16, stages=((1, 16, 1, 1, False), (4, 24, 2, 2, False), (4, 32, 2, 2, True),
                                                (4, 48, 2, 2, True)), head: int = 128, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.ReLU6())
        blocks, cin = [], stem
        for expand, cout, count, stride, squeeze in stages:
            for i in range(count):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand, squeeze))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU6())
        self.fc = nn.Linear(head, classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


MODELS = {  # narrow variants train to >90% on the generated task in minutes on one CPU core
    "resnet20-w8": lambda: CifarResNet(20, width=8),
    "vgg-small": lambda: SmallVGG((16, 16, "M", 32, 32, "M", 64, 64, "M")),
    "mobilenet-small": lambda: SmallMobileNet(),
    "resnet20": lambda: CifarResNet(20),
    "resnet32": lambda: CifarResNet(32),
    "resnet56": lambda: CifarResNet(56),
    "resnet110": lambda: CifarResNet(110),
}
