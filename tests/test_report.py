"""What ``fxprune.analyze`` prints: layers named by module and side."""

import torch
import torch.nn as nn

import fxprune


class UpSample(nn.Module):
    def __init__(self):
        super().__init__()
        self.down, self.up, self.out = nn.Conv2d(3, 7, 3, padding=1), nn.ConvTranspose2d(7, 5, 2, stride=2), nn.Conv2d(
            5, 3, 1)

    def forward(self, x):
        return self.out(self.up(self.down(x)))


def test_a_transposed_conv_reads_its_inputs_on_weight_dim_0_and_the_report_says_so():
    """ConvTranspose weights are (in, out, k...): its 7 inputs are down's outputs, its 5 outputs out's inputs."""
    report = fxprune.analyze(UpSample(), torch.randn(1, 3, 8, 8))
    groups = {g.channels: g.layers for g in report.groups}
    assert groups[7] == ["down (out)", "up (in)"] and groups[5] == ["up (out)", "out (in)"]
