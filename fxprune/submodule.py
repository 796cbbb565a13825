"""Prune one submodule of a model that cannot be traced whole, in place.

Detectors take lists of images and branch on them, so torch.fx cannot trace them; their backbone
(a plain tensor-in, features-out module) can be. ``compress_submodule`` compresses that part and
puts the result back where it was. The submodule's outputs are graph outputs, so their channels
stay frozen: whatever reads them outside (an FPN, detection heads) keeps working unchanged.

    >>> detector = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None)  # doctest: +SKIP
    >>> fxprune.compress_submodule(detector, "backbone", torch.randn(2, 3, 320, 320), ratio=0.5)  # doctest: +SKIP
"""

from __future__ import annotations

import torch

from .compress import compress
from .errors import InputError

_PLAIN = (bool, int, float, str, tuple, list)


def _submodule(model: torch.nn.Module, name: str) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(name, str) or not name:
        raise InputError(f"name: expected the dotted name of a submodule (like 'backbone'), got {name!r}")
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = ", ".join(n for n, _ in model.named_children())
        raise InputError(f"name: {type(model).__name__} has no submodule {name!r}; its children are {children}") \
            from None


def _carry_attributes(original: torch.nn.Module, small: torch.nn.Module) -> None:
    """Copy plain public attributes (``backbone.out_channels``) that code around the submodule may read."""
    for attr, value in vars(original).items():
        if attr.startswith("_") or attr == "training" or not isinstance(value, _PLAIN) or hasattr(small, attr):
            continue
        setattr(small, attr, value)


def compress_submodule(model: torch.nn.Module, name: str, data, ratio: float = 0.5, **options) -> torch.nn.Module:
    """Replace ``model.<name>`` by its compressed version, **modifying ``model`` in place**; return ``model``.

    This is the one fxprune call that changes the caller's model, by design: the surrounding code
    (a detector's transform, heads, post-processing) stays as it is and keeps calling the submodule
    by its name. ``data`` is what the submodule itself receives (for a detection backbone, a batch
    of image tensors). Every keyword option of ``compress`` applies. The submodule's outputs keep
    their channels, so whatever consumes them outside is untouched.
    """
    original = _submodule(model, name)
    small = compress(original, data, ratio, **options)
    _carry_attributes(original, small)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, small)
    return model
