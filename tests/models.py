"""Small hand-written models, one per coupling pattern of docs/DESIGN.md, with prime channel counts
(3 → 5 → 7 → 11) so that a wrong index cannot pass by accident. Several come in a module form and
a functional form (``F.conv2d`` with parameters held directly)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(cin, cout, k=3, **kw):
    return nn.Conv2d(cin, cout, k, padding=k // 2, **kw)


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1, self.c2, self.b2 = conv(3, 5), nn.BatchNorm2d(5), conv(5, 7), nn.BatchNorm2d(7)
        self.fc = nn.Linear(7, 11)

    def forward(self, x):
        x = F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ChainFunctional(nn.Module):
    def __init__(self):
        super().__init__()
        self.w1, self.bias1 = nn.Parameter(torch.randn(5, 3, 3, 3)), nn.Parameter(torch.randn(5))
        self.w2 = nn.Parameter(torch.randn(7, 5, 3, 3))
        self.w3, self.bias3 = nn.Parameter(torch.randn(11, 7)), nn.Parameter(torch.randn(11))

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.w1, self.bias1, padding=1))
        x = F.relu(F.conv2d(x, self.w2, None, padding=1))
        return F.linear(x.mean((2, 3)), self.w3, self.bias3)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b, self.out = conv(3, 7), conv(7, 5), conv(5, 7), conv(7, 11)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = x + self.b(F.relu(self.a(x)))
        return self.out(x)


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.down, self.up, self.c2 = conv(3, 11), conv(11, 5, 1), conv(5, 11, 1), conv(11, 7)

    def forward(self, x):
        x = self.c1(x)
        gate = torch.sigmoid(self.up(F.relu(self.down(x.mean((2, 3), keepdim=True)))))
        return self.c2(x * gate)


class Depthwise(nn.Module):
    def __init__(self, multiplier=1):
        super().__init__()
        self.c1 = conv(3, 7)
        self.dw = conv(7, 7 * multiplier, groups=7)
        self.bn = nn.BatchNorm2d(7 * multiplier)
        self.c2 = conv(7 * multiplier, 5, 1)

    def forward(self, x):
        return self.c2(F.relu(self.bn(self.dw(F.relu(self.c1(x))))))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.grouped, self.c2 = conv(3, 12), conv(12, 18, groups=3), conv(18, 5, 1)

    def forward(self, x):
        return self.c2(F.relu(self.grouped(F.relu(self.c1(x)))))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = conv(3, 5), conv(3, 7), conv(12, 11)

    def forward(self, x):
        return self.c(torch.cat([F.relu(self.a(x)), self.b(x)], dim=1))


class SplitChunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.a, self.b = conv(3, 10), conv(5, 7), conv(5, 7)
        self.c2, self.p, self.q, self.out = conv(7, 10), conv(3, 11), conv(7, 11), conv(11, 5)

    def forward(self, x):
        left, right = self.c1(x).chunk(2, dim=1)
        y = self.c2(self.a(left) + self.b(right))
        small, large = torch.split(y, [3, 7], dim=1)
        return self.out(self.p(small) * self.q(large))


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.fc1, self.fc2 = conv(3, 7), nn.Linear(7 * 4 * 4, 13), nn.Linear(13, 5)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(F.relu(self.c1(x)), 4)
        return self.fc2(F.relu(self.fc1(x.view(x.size(0), -1))))


class ChannelShuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = conv(3, 12), conv(6, 7), conv(6, 7)

    def forward(self, x):
        x = self.c1(x)
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        left, right = x.chunk(2, dim=1)
        return self.c2(left) + self.c3(right)


class PermuteLayerNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.norm = conv(3, 7), nn.LayerNorm(7)
        self.up, self.down, self.c2 = nn.Linear(7, 11), nn.Linear(11, 7), conv(7, 5)

    def forward(self, x):
        x = self.c1(x)
        y = self.down(F.gelu(self.up(self.norm(x.permute(0, 2, 3, 1)))))
        return self.c2(x + y.permute(0, 3, 1, 2))


class Attention(nn.Module):
    """Hand-written multi-head self-attention over the pixels: heads of 6, two heads."""

    def __init__(self):
        super().__init__()
        self.embed = conv(3, 13)
        self.q, self.k, self.v, self.proj = nn.Linear(13, 12), nn.Linear(13, 12), nn.Linear(13, 12), nn.Linear(12, 13)
        self.head = nn.Linear(13, 5)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        n, length, _ = tokens.shape
        q = self.q(tokens).view(n, length, 2, 6).transpose(1, 2)
        k = self.k(tokens).view(n, length, 2, 6).transpose(1, 2)
        v = self.v(tokens).view(n, length, 2, 6).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-2, -1) * 0.4, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(n, length, 12)
        return self.head((tokens + self.proj(out)).mean(1))


class Slicing(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.a, self.b = conv(3, 11), conv(5, 7), conv(4, 7)

    def forward(self, x):
        x = self.c1(x)
        return self.a(x[:, 2:7]) + self.b(x[:, 7:])


class MeanOverChannels(nn.Module):
    """Channels mixed by a mean over the channel dim: the first conv's outputs must stay."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = conv(3, 7), conv(7, 5)

    def forward(self, x):
        x = self.c1(x)
        return self.c2(x * x.mean(1, keepdim=True))


class UnknownOp(nn.Module):
    """``torch.roll`` along channels has no rule: the channels it touches must stay."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = conv(3, 7), conv(7, 5), conv(5, 11)

    def forward(self, x):
        return self.c3(F.relu(self.c2(torch.roll(self.c1(x), 1, dims=1))))


PATTERNS = {
    "chain": Chain, "chain_functional": ChainFunctional, "residual": Residual, "squeeze_excite": SqueezeExcite,
    "depthwise": Depthwise, "depthwise_multiplier": lambda: Depthwise(2), "grouped": Grouped, "concat": Concat,
    "split_chunk": SplitChunk, "flatten_linear": FlattenLinear, "channel_shuffle": ChannelShuffle,
    "permute_layer_norm": PermuteLayerNorm, "attention": Attention, "slicing": Slicing,
}
