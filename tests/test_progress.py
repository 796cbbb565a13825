"""Long steps say how far they are, as MLACP does: reconstruction's scoring and fine-tuning."""

import torch
from helpers import randomize
from models import PATTERNS

import fxprune


def _data():
    x = torch.randn(8, 3, 8, 8)
    return [(x[:4], torch.randint(0, 3, (4,))), (x[4:], torch.randint(0, 3, (4,)))]


def test_reconstruction_shows_a_bar_over_its_groups(capsys):
    fxprune.compress(randomize(PATTERNS["residual"]()), _data(), ratio=0.5, method="reconstruction")
    assert "reconstruction" in capsys.readouterr().err


def test_finetune_shows_its_loss_and_can_be_quiet(capsys):
    model = randomize(PATTERNS["residual"]())
    fxprune.finetune(model, _data(), epochs=1)
    assert "finetune: epoch 1, loss" in capsys.readouterr().err
    fxprune.finetune(model, _data(), epochs=1, progress=False)
    assert capsys.readouterr().err == ""
