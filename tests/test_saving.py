"""fxprune.save / fxprune.load: a plan (JSON) and weights, no pickled code, on several families."""

import json

import pytest
import torch
import torchvision
from helpers import randomize

import fxprune
from fxprune import saving
from fxprune.graph.outputs import compare

FAMILIES = {"resnet18": 32, "mobilenet_v2": 32, "densenet": 32, "shufflenet_v2_x0_5": 32}


def _build(name):
    """A torchvision model; ``densenet`` is a two-block DenseNet: the same concatenations, a tenth the layers."""
    if name == "densenet":
        return torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16)
    return torchvision.models.get_model(name)


def _saved(name, size, tmp_path):
    torch.manual_seed(0)
    model = randomize(_build(name))
    x = torch.randn(2, 3, size, size)
    small = fxprune.compress(model, x, ratio=0.5)
    with torch.no_grad():  # weights that differ from a fresh prune: only the file can carry them
        for p in small.parameters():
            p.mul_(1.5)
    return small, x, fxprune.save(small, tmp_path / "small.fxprune")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_round_trip_rebuilds_the_same_model(name, tmp_path):
    small, x, folder = _saved(name, FAMILIES[name], tmp_path)
    fresh = _build(name)
    loaded = fxprune.load(folder, fresh, x[:1])
    assert compare(loaded.eval(), small.eval(), (x,))[0] == 0.0
    assert json.loads((folder / "plan.json").read_text())["groups"]
    assert (folder / "weights.safetensors").exists()


def test_torch_save_fallback_loads_with_weights_only(tmp_path, monkeypatch):
    monkeypatch.setattr(saving, "safetensors_torch", None)
    small, x, folder = _saved("resnet18", 32, tmp_path)
    assert (folder / "weights.pt").exists() and not (folder / "weights.safetensors").exists()
    state = torch.load(folder / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    loaded = fxprune.load(folder, torchvision.models.resnet18(), x[:1])
    assert compare(loaded.eval(), small.eval(), (x,))[0] == 0.0


def test_load_without_example_uses_the_recorded_input_shape(tmp_path):
    small, x, folder = _saved("resnet18", 32, tmp_path)
    loaded = fxprune.load(folder, torchvision.models.resnet18())
    assert compare(loaded.eval(), small.eval(), (x,))[0] == 0.0


def test_load_into_another_architecture_says_so(tmp_path):
    _, x, folder = _saved("resnet18", 32, tmp_path)
    with pytest.raises(fxprune.InputError):
        fxprune.load(folder, torchvision.models.resnet34(), x[:1])


def test_save_needs_a_compressed_model(tmp_path):
    with pytest.raises(fxprune.InputError, match="fxprune_plan"):
        fxprune.save(torchvision.models.resnet18(), tmp_path / "x")


def test_load_of_a_folder_without_plan_says_so(tmp_path):
    with pytest.raises(fxprune.InputError, match="plan.json"):
        fxprune.load(tmp_path, torchvision.models.resnet18(), torch.randn(1, 3, 32, 32))
