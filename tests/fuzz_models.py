"""Random valid architectures for fuzzing fxprune, and the check that every one must pass.

An architecture is plain data: a tuple of blocks, each ``(kind, *sizes)``, drawn by the hypothesis
strategy ``architectures()`` so that shapes always fit (a shuffle's groups divide the channels,
spatial sizes stay between 1 and 8). ``FuzzNet(spec)`` builds it; ``check(spec, ratio)`` compresses
it and returns ``"pruned"``, ``"frozen"`` (nothing could be removed) or ``"refused"`` (an fxprune
error with a message), asserting everything fxprune promises on the way.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import compress_checked, randomize
from hypothesis import strategies as st

import fxprune
from fxprune.choose.plan import kept_count, kept_slots, removed_components
from fxprune.graph.tensors import DimRef, param_key

INPUT = (2, 3, 4, 4)
REFUSALS: list[tuple] = []  # (spec, ratio, message) of every refusal, for the fuzz benchmark's report


def conv(cin, cout, k=3, groups=1):
    return nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups)


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, k, groups, norm):
        super().__init__()
        self.conv, self.norm = conv(cin, cout, k, groups), nn.BatchNorm2d(cout) if norm else nn.Identity()

    def forward(self, x):
        return F.relu(self.norm(self.conv(x)))


class Residual(nn.Module):
    def __init__(self, c, hidden, depthwise):
        super().__init__()
        self.a = conv(c, c, 3, groups=c) if depthwise else conv(c, hidden, 1)
        self.b = conv(c if depthwise else hidden, c, 1)

    def forward(self, x):
        return x + self.b(torch.relu(self.a(x)))


class Concat(nn.Module):
    def __init__(self, cin, a, b):
        super().__init__()
        self.a, self.b = conv(cin, a, 1), conv(cin, b, 3)

    def forward(self, x):
        return torch.cat([self.a(x), F.relu(self.b(x))], dim=1)


class Split(nn.Module):
    """Cut the channels in two (``chunk`` or ``split``), convolve each piece, add the results."""

    def __init__(self, cin, first, cout):
        super().__init__()
        self.first, self.rest = first, cin - first
        self.p, self.q = conv(first, cout, 1), conv(cin - first, cout, 3)

    def forward(self, x):
        if self.first == self.rest:
            left, right = torch.chunk(x, 2, dim=1)
        else:
            left, right = x.split([self.first, self.rest], dim=1)
        return self.p(left) + self.q(right)


class Shuffle(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.size()
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class SEGate(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.down, self.up = conv(c, hidden, 1), conv(hidden, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.up(F.relu(self.down(x.mean((2, 3), keepdim=True)))))


class PermuteNorm(nn.Module):
    """Channels last, LayerNorm and Linear over them, channels first again."""

    def __init__(self, cin, cout):
        super().__init__()
        self.norm, self.linear = nn.LayerNorm(cin), nn.Linear(cin, cout)

    def forward(self, x):
        return self.linear(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


class Upsample(nn.Module):
    def __init__(self, cin, cout, how):
        super().__init__()
        self.how = how
        self.layer = {"interpolate": conv(cin, cout, 1), "transposed": nn.ConvTranspose2d(cin, cout, 2, stride=2),
                      "pixel_shuffle": conv(cin, cout * 4, 1)}[how]

    def forward(self, x):
        if self.how == "interpolate":
            return self.layer(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        y = self.layer(x)
        return F.pixel_shuffle(y, 2) if self.how == "pixel_shuffle" else y


class Down(nn.Module):
    def forward(self, x):
        return F.max_pool2d(x, 2)


class Head(nn.Module):
    def __init__(self, how, c, hw, classes):
        super().__init__()
        self.how = how
        self.layer = nn.Linear(c * (hw * hw if how == "flatten" else 1), classes) if how != "conv" \
            else conv(c, classes, 1)

    def forward(self, x):
        if self.how == "pool":
            x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        elif self.how == "flatten":
            x = x.reshape(x.size(0), -1)
        return self.layer(x)


BUILDERS = {
    "conv": lambda c, hw, cout, k, groups, norm: ConvBlock(c, cout, k, groups, norm),
    "residual": lambda c, hw, hidden, depthwise: Residual(c, hidden, depthwise),
    "concat": lambda c, hw, a, b: Concat(c, a, b),
    "split": lambda c, hw, first, cout: Split(c, first, cout),
    "shuffle": lambda c, hw, groups: Shuffle(groups),
    "se": lambda c, hw, hidden: SEGate(c, hidden),
    "permute_norm": lambda c, hw, cout: PermuteNorm(c, cout),
    "upsample": lambda c, hw, cout, how: Upsample(c, cout, how),
    "down": lambda c, hw: Down(),
    "head": lambda c, hw, how, classes: Head(how, c, hw, classes),
}


def out_size(block, c: int, hw: int) -> tuple[int, int]:
    """Channels and spatial size after ``block``."""
    kind, *sizes = block
    if kind in ("conv", "permute_norm"):
        return sizes[0], hw
    if kind == "concat":
        return sizes[0] + sizes[1], hw
    if kind == "split":
        return sizes[1], hw
    if kind == "upsample":
        return sizes[0], hw * 2
    if kind == "down":
        return c, hw // 2
    return c, hw


class FuzzNet(nn.Module):
    def __init__(self, spec):
        super().__init__()
        self.spec = spec
        c, hw = INPUT[1], INPUT[2]
        layers = []
        for block in spec:
            layers.append(BUILDERS[block[0]](c, hw, *block[1:]))
            c, hw = out_size(block, c, hw)
        self.blocks = nn.ModuleList(layers)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


@st.composite
def _block(draw, c: int, hw: int):
    width = st.integers(1, 9)
    kinds = ["conv", "residual", "concat", "se", "permute_norm"] + ["split"] * (c >= 2) + ["down"] * (hw >= 2)
    kinds += ["upsample"] * (hw <= 4) + ["shuffle"] * any(c % g == 0 for g in (2, 3))
    kind = draw(st.sampled_from(kinds))
    if kind == "conv":
        groups = draw(st.sampled_from([1, c] + [g for g in (2, 3) if c % g == 0]))
        cout = draw(width) * groups if groups > 1 else draw(width)
        return (kind, cout, draw(st.sampled_from([1, 3])), groups, draw(st.booleans()))
    if kind == "residual":
        return (kind, draw(width), draw(st.booleans()))
    if kind == "concat":
        return (kind, draw(width), draw(width))
    if kind == "split":
        return (kind, draw(st.integers(1, c - 1)), draw(width))
    if kind == "shuffle":
        return (kind, draw(st.sampled_from([g for g in (2, 3) if c % g == 0])))
    if kind == "se":
        return (kind, draw(st.integers(1, 4)))
    if kind in ("permute_norm",):
        return (kind, draw(width))
    if kind == "upsample":
        return (kind, draw(width), draw(st.sampled_from(["interpolate", "transposed", "pixel_shuffle"])))
    return (kind,)


@st.composite
def architectures(draw, max_blocks: int = 6):
    """A tuple of blocks ending in a head: every one builds, runs on ``INPUT`` and has weights."""
    c, hw, spec = INPUT[1], INPUT[2], []
    for _ in range(draw(st.integers(1, max_blocks))):
        block = draw(_block(c, hw))
        spec.append(block)
        c, hw = out_size(block, c, hw)
    spec.append(("head", draw(st.sampled_from(["pool", "flatten", "conv"])), draw(st.integers(1, 5))))
    return tuple(spec)


def _expected_shapes(analysis, plan) -> dict[str, tuple]:
    """Each parameter's shape after the plan, computed from the analysis alone."""
    kept = kept_slots(analysis, removed_components(analysis, plan))
    table = analysis.table
    return {key: tuple(len(kept[DimRef(key, d)]) if DimRef(key, d) in kept else size
                       for d, size in enumerate(table.shapes[key]))
            for key in table.param_keys}


def _check_shapes(small, analysis, plan) -> None:
    expected = _expected_shapes(analysis, plan)
    for name, tensor in list(small.named_parameters()) + list(small.named_buffers()):
        key = param_key(name)
        if key in expected:
            assert tuple(tensor.shape) == expected[key], f"{name}: {tuple(tensor.shape)} != {expected[key]}"
    for entry in plan.groups:
        assert set(entry.keep) <= set(entry.indices) and entry.keep, entry
    assert len(plan.groups) == len(analysis.groups)
    for group, entry in zip(analysis.groups, plan.groups):
        assert len(entry.indices) % group.size == 0, f"{entry.anchor}: {len(entry.indices)} slots, {group.size}"


def check(spec, ratio: float = 0.5, export_dir=None, seed: int = 0) -> str:
    """Compress ``FuzzNet(spec)`` and assert what fxprune promises; say how it went."""
    torch.manual_seed(seed)
    model = randomize(FuzzNet(spec), seed)
    x = torch.randn(*INPUT)
    try:
        small, analysis, plan, result = compress_checked(model, (x,), ratio=ratio, tolerance=1e-3,
                                                             expect_removed=False)
    except fxprune.FxpruneError as error:
        assert str(error), "an fxprune error must say what went wrong"
        REFUSALS.append((spec, ratio, f"{type(error).__name__}: {str(error)[:300]}"))
        return "refused"
    small.graph.lint()
    _check_shapes(small, analysis, plan)
    assert np.isfinite(result.max_abs_diff)
    # a failed shape check freezes more and retries, so the final analysis may hold fewer channels
    assert fxprune.analyze(model, x).prunable_channels >= sum(g.size for g in analysis.groups)
    if export_dir is not None and plan.removed_channels:
        from fxprune.deploy.export import export_onnx

        export_onnx(small, x, f"{export_dir}/fuzz.onnx", tolerance=1e-3)
    if not plan.removed_channels:  # only when every group is too small to lose a channel at this ratio
        assert all(kept_count(g.size, ratio, 1) == g.size for g in analysis.groups), "a group could have lost channels"
    return "pruned" if plan.removed_channels else "frozen"
