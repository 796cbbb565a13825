"""A representative of every torchvision classification family: pruned == masked original.

Weights are randomised (and BatchNorm given real statistics) so no output is trivially zero.
Families with LayerNorm over pruned channels (ConvNeXt, Swin, MaxViT, ViT) cannot match the masked
model exactly; there the output shape and a finite forward are checked.
"""

import warnings

import pytest
import torch
import torchvision
from helpers import compress_checked, parameter_count, randomize

import fxprune

FAMILIES = {
    "resnet18": 64, "vgg11_bn": 32, "densenet121": 64, "mobilenet_v2": 64, "mobilenet_v3_small": 64,
    "efficientnet_b0": 64, "regnet_x_400mf": 64, "regnet_y_400mf": 64, "shufflenet_v2_x0_5": 64,
    "squeezenet1_1": 64, "googlenet": 64, "inception_v3": 96, "mnasnet0_5": 64, "resnext50_32x4d": 64,
    "convnext_tiny": 64, "vit_b_32": 224, "swin_t": 224, "maxvit_t": 224, "alexnet": 64,
    "wide_resnet50_2": 64,
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_compresses_correctly(name):
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = randomize(torchvision.models.get_model(name, weights=None, **kwargs))
    size = FAMILIES[name]
    inputs = (torch.randn(2, 3, size, size),)
    small, analysis, plan, result = compress_checked(model, inputs, ratio=0.5)
    out = small(*inputs)
    assert out.shape == model(*inputs).shape and torch.isfinite(out).all()
    assert parameter_count(small) < 0.8 * parameter_count(model)


@pytest.mark.parametrize("name,size", [("googlenet", 64), ("inception_v3", 299)])
def test_auxiliary_heads_are_pruned_and_work_in_both_modes(name, size):
    model = randomize(torchvision.models.get_model(name, weights=None)).train()
    x = torch.randn(2, 3, size, size)
    small = fxprune.compress(model, x, ratio=0.5, round_to=1)
    assert model.training, "the user's mode flags are restored"
    assert isinstance(small, type(model)), "the result keeps the model's own class, so both modes work"
    aux = small.aux1 if name == "googlenet" else small.AuxLogits
    original_aux = model.aux1 if name == "googlenet" else model.AuxLogits
    assert parameter_count(aux) < parameter_count(original_aux)
    assert small.eval()(x).shape == (2, 1000)
    outputs = small.train()(x)
    assert len(outputs) == (3 if name == "googlenet" else 2) and all(o.shape == (2, 1000) for o in outputs)


def test_a_saved_model_with_auxiliary_heads_loads_with_its_heads(tmp_path):
    """The plan covers the training-mode graph, so re-applying it must prune the heads the same way."""
    model = randomize(torchvision.models.googlenet(weights=None, init_weights=False)).eval()
    x = torch.randn(2, 3, 64, 64)
    small = fxprune.compress(model, x, ratio=0.5, round_to=1)
    fxprune.save(small, tmp_path / "small")
    loaded = fxprune.load(tmp_path / "small", torchvision.models.googlenet(weights=None, init_weights=False))
    assert isinstance(loaded, type(model))
    assert parameter_count(loaded.aux1) == parameter_count(small.aux1) < parameter_count(model.aux1)
    torch.testing.assert_close(loaded.eval()(x), small.eval()(x))
    assert len(loaded.train()(x)) == 3


def test_models_that_only_pass_the_mode_as_a_flag_compress_once_without_warnings():
    """Stochastic depth takes ``training`` as an argument; the layers are the same in both modes."""
    model = randomize(torchvision.models.efficientnet_b0())
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        small = fxprune.compress(model, torch.randn(1, 3, 64, 64), ratio=0.5)
    assert isinstance(small, torch.fx.GraphModule)
