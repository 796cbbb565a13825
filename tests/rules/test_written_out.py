"""Ops written out as several nodes (``fxprune.rules.written_out``): a hand-written RMSNorm becomes one
``F.rms_norm`` node, by either capture, so that the hidden size it normalises can be pruned."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune.pipeline import traced


class WrittenOutRMSNorm(nn.Module):
    """RMSNorm as Llama's modelling code writes it."""

    def __init__(self, size, eps=1e-6, power=2, dim=-1):
        super().__init__()
        self.weight, self.eps, self.power, self.dim = nn.Parameter(torch.rand(size) + 0.5), eps, power, dim

    def forward(self, x):
        x = x.to(torch.float32)
        variance = x.pow(self.power).mean(self.dim, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


class Block(nn.Module):
    def __init__(self, norm=None, hidden=16):
        super().__init__()
        self.up, self.norm, self.down = nn.Linear(3, hidden), norm or WrittenOutRMSNorm(hidden), nn.Linear(hidden, 2)

    def forward(self, x):
        return self.down(self.norm(self.up(x)))


def targets(gm):
    return [n.target for n in gm.graph.nodes if n.op in ("call_function", "call_method")]


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_a_written_out_rms_norm_becomes_one_node_with_the_same_values(capture):
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(4, 5, 3)
    gm = traced(model, (x,), capture=capture)
    assert targets(gm).count(F.rms_norm) == 1
    assert not any("mean" in str(t) or "rsqrt" in str(t) for t in targets(gm))
    torch.testing.assert_close(gm(x), model(x))


def test_the_hidden_size_behind_a_written_out_rms_norm_is_pruned():
    torch.manual_seed(0)
    model, x = Block().eval(), torch.randn(4, 3)
    report = fxprune.analyze(model, x)
    assert report.analysis.mixing_norms == ["rms_norm"]  # its statistics span the channels pruned
    small = fxprune.compress(model, x, ratio=0.5, round_to=1)
    assert small.get_parameter("norm.weight").shape == (8,) and small.get_parameter("up.weight").shape == (8, 3)
    assert small(torch.randn(6, 3)).shape == (6, 2)


@pytest.mark.parametrize("norm", [WrittenOutRMSNorm(16, power=3), WrittenOutRMSNorm(16, dim=0)],
                         ids=["cube", "mean-over-batch"])
def test_what_is_not_an_rms_norm_over_the_last_dim_stays_as_written(norm):
    model, x = Block(norm).eval(), torch.randn(4, 3)
    gm = traced(model, (x,))
    assert F.rms_norm not in targets(gm) and "mean" in targets(gm)


def test_a_square_used_twice_is_not_fused():
    class Twice(WrittenOutRMSNorm):
        def forward(self, x):
            square = x.pow(2)
            return x * torch.rsqrt(square.mean(-1, keepdim=True) + self.eps) + square

    model, x = Block(Twice(16)).eval(), torch.randn(4, 3)
    assert F.rms_norm not in targets(traced(model, (x,)))
