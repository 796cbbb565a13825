"""``import fxprune`` stays light: rules name torchvision's targets lazily (``rules.base.Lazy``)."""

import importlib
import pathlib
import subprocess
import sys

import pytest
import torch.nn as nn

import fxprune
from fxprune.rules import Lazy, find_rule

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_import_fxprune_does_not_import_torchvision_models():
    code = "import sys, fxprune; print(sorted(m for m in sys.modules if m.startswith('torchvision.models')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_torchvision_targets_named_lazily_get_their_rules_once_imported():
    from torchvision.models import swin_transformer
    from torchvision.ops import StochasticDepth

    assert find_rule(("function", swin_transformer.shifted_window_attention)).name == "window_attention"
    assert find_rule(("module", StochasticDepth)).name == "unary"
    assert StochasticDepth in fxprune.rules.shape_shortcuts()


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    """A module on the path that nobody has imported yet, with an op ``gate``."""
    (tmp_path / "fxprune_lazy_target.py").write_text("def gate(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    target = Lazy("fxprune_lazy_target:gate")
    yield target
    fxprune.rules.unregister(target)
    sys.modules.pop("fxprune_lazy_target", None)


def test_a_lazy_target_applies_once_its_module_is_imported(lazy_module):
    fxprune.rules.register(lazy_module)(lambda view: [])
    assert "fxprune_lazy_target" not in sys.modules
    gate = importlib.import_module("fxprune_lazy_target").gate
    assert find_rule(("function", gate)) is not None
    with pytest.raises(ValueError, match="registered twice"):
        fxprune.rules.register(gate)(lambda view: [])


def test_a_lazy_name_needs_module_and_name():
    with pytest.raises(ValueError, match="module:name"):
        Lazy("torchvision.ops.StochasticDepth")


def test_a_lazy_target_for_a_registered_object_is_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        fxprune.rules.register(Lazy("torch.nn:Conv2d"))(lambda view: [])
    assert find_rule(("module", nn.Conv2d)).latency == "producer"
