"""Models as users write them: functional calls, literal sizes, shared modules, recurrent layers.

Prime channel counts (3, 5, 7, 11, 13) so that a wrong index cannot pass by accident. Each model
takes a (N, 3, 8, 8) image. ``EXPECT_FROZEN`` names, for models whose key channels must stay, the
layer to ask about and a word the reason must contain (the op at fault).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(cin, cout, k=3, **kw):
    return nn.Conv2d(cin, cout, k, padding=k // 2, **kw)


class FunctionalConv(nn.Module):
    """``F.conv2d`` with weights held as parameters, strided, grouped and biased."""

    def __init__(self):
        super().__init__()
        self.w1, self.b1 = nn.Parameter(torch.randn(10, 3, 3, 3)), nn.Parameter(torch.randn(10))
        self.w2 = nn.Parameter(torch.randn(14, 5, 3, 3))  # two groups of 5 → 7
        self.w3 = nn.Parameter(torch.randn(11, 14, 1, 1))

    def forward(self, x):
        x = F.relu(F.conv2d(x, self.w1, self.b1, stride=2, padding=1))
        x = F.relu(F.conv2d(x, self.w2, None, 1, 1, 1, 2))
        return F.conv2d(x, self.w3)


class CatChunkSplit(nn.Module):
    """``torch.cat``, ``torch.chunk`` and ``x.split`` with uneven sizes, feeding separate convs."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.mix = conv(3, 5), conv(3, 7), conv(12, 12)
        self.p, self.q, self.r, self.out = conv(6, 5), conv(6, 5), conv(5, 5), conv(12, 11)

    def forward(self, x):
        x = self.mix(torch.cat([F.relu(self.a(x)), self.b(x)], dim=1))
        left, right = torch.chunk(x, 2, dim=1)
        first, second = x.split([7, 5], dim=1)
        y = self.p(left) + self.q(right) + self.r(second)
        return self.out(torch.cat([y, first], 1))


class ViewReshape(nn.Module):
    """``view`` with a literal size and ``reshape`` with sizes computed from ``x.size``."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = conv(3, 7), conv(7, 5)
        self.fc1, self.fc2 = nn.Linear(5 * 4 * 4, 13), nn.Linear(5 + 13, 11)

    def forward(self, x):
        x = F.max_pool2d(self.c2(F.relu(self.c1(x))), 2)
        flat = x.view(-1, 80)  # literal: 5 channels × 4 × 4
        per_channel = x.reshape(x.size(0), x.size(1), -1).amax(-1)  # computed
        return self.fc2(torch.cat([per_channel, F.relu(self.fc1(flat))], 1))


class Einsum(nn.Module):
    """A 1×1 convolution written as ``einsum`` with a parameter, then a channel-wise scale."""

    def __init__(self):
        super().__init__()
        self.c1 = conv(3, 7)
        self.weight = nn.Parameter(torch.randn(11, 7))
        self.c2 = conv(11, 5)

    def forward(self, x):
        x = F.relu(self.c1(x))
        return self.c2(torch.einsum("nchw,dc->ndhw", x, self.weight))


class InterpolatePixelShuffle(nn.Module):
    """Upsampling by interpolation to another tensor's size, and sub-pixel convolution."""

    def __init__(self):
        super().__init__()
        self.c1, self.down, self.c2 = conv(3, 7), conv(7, 5, stride=2), conv(5, 7)
        self.expand, self.out = conv(7, 5 * 4), conv(5, 11)

    def forward(self, x):
        skip = F.relu(self.c1(x))
        y = F.interpolate(self.c2(F.relu(self.down(skip))), size=skip.shape[-2:], mode="bilinear")
        y = F.pixel_shuffle(self.expand(skip + y), 2)
        return self.out(y)


class TransposedAndConv1d(nn.Module):
    """``ConvTranspose2d`` upsampling, then a ``Conv1d`` over the flattened pixels."""

    def __init__(self):
        super().__init__()
        self.c1, self.up = conv(3, 7), nn.ConvTranspose2d(7, 5, 2, stride=2)
        self.seq, self.head = nn.Conv1d(5, 11, 3, padding=1), nn.Linear(11, 13)

    def forward(self, x):
        y = F.relu(self.up(F.relu(self.c1(x))))
        y = F.relu(self.seq(y.flatten(2)))
        return self.head(y.mean(-1))


class SharedModule(nn.Module):
    """One conv called on two tensors: its channels are the same in both calls."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.shared, self.out = conv(3, 7), conv(3, 7), conv(7, 5), conv(5, 11)

    def forward(self, x):
        return self.out(F.relu(self.shared(F.relu(self.a(x)))) + self.shared(torch.tanh(self.b(x))))


class ParameterAdded(nn.Module):
    """Learned offsets added to activations: a per-channel bias and a positional map."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = conv(3, 7), conv(7, 5)
        self.offset = nn.Parameter(torch.randn(1, 7, 1, 1))
        self.position = nn.Parameter(torch.randn(1, 7, 8, 8))

    def forward(self, x):
        return self.c2(F.relu(self.c1(x) + self.offset) * 0.5 + self.position)


class Recurrent(nn.Module):
    """Conv features read as a sequence by an LSTM and a GRU (recurrent layers: frozen)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = conv(3, 7), conv(7, 5)
        self.lstm, self.gru, self.head = nn.LSTM(5, 11, batch_first=True), nn.GRU(11, 13, batch_first=True), \
            nn.Linear(13, 3)

    def forward(self, x):
        seq = self.c2(F.relu(self.c1(x))).flatten(2).transpose(1, 2)
        out, _ = self.lstm(seq)
        out, _ = self.gru(out)
        return self.head(out[:, -1])


class UNet(nn.Module):
    """Two scales, skip connections concatenated with upsampled decoder features."""

    def __init__(self):
        super().__init__()
        self.enc1, self.enc2, self.bottom = conv(3, 5), conv(5, 7), conv(7, 11)
        self.up2, self.dec2 = nn.ConvTranspose2d(11, 7, 2, stride=2), conv(14, 7)
        self.dec1, self.out = conv(7 + 5, 5), nn.Conv2d(5, 2, 1)

    def forward(self, x):
        e1 = F.relu(self.enc1(x))
        e2 = F.relu(self.enc2(F.max_pool2d(e1, 2)))
        b = F.relu(self.bottom(F.max_pool2d(e2, 2)))
        d2 = F.relu(self.dec2(torch.cat([self.up2(b), e2], 1)))
        d1 = F.interpolate(d2, scale_factor=2.0, mode="nearest")
        return self.out(F.relu(self.dec1(torch.cat([d1, e1], 1))))


class ECA(nn.Module):
    """Efficient channel attention: a Conv1d slides across the channel axis, mixing neighbours."""

    def __init__(self):
        super().__init__()
        self.c1, self.eca, self.c2, self.c3 = conv(3, 7), nn.Conv1d(1, 1, 3, padding=1, bias=False), conv(7, 5), \
            conv(5, 11)

    def forward(self, x):
        x = F.relu(self.c1(x))
        y = F.adaptive_avg_pool2d(x, 1)
        y = self.eca(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return self.c3(F.relu(self.c2(x * torch.sigmoid(y))))


USER_MODELS = {
    "functional_conv": FunctionalConv, "cat_chunk_split": CatChunkSplit, "view_reshape": ViewReshape,
    "einsum": Einsum, "interpolate_pixel_shuffle": InterpolatePixelShuffle,
    "transposed_and_conv1d": TransposedAndConv1d, "shared_module": SharedModule,
    "parameter_added": ParameterAdded, "recurrent": Recurrent, "unet": UNet, "eca": ECA,
}

# model name -> (layer whose output channels must stay, a word the frozen reason must contain)
EXPECT_FROZEN = {
    "recurrent": ("c2", "LSTM"),
    "eca": ("c1", "Conv1d"),
}
