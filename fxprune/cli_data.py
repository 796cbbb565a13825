"""What the ``fxprune`` command reads: its argument values, the model (``MODEL``, ``--weights``) and the
calibration data (``--data``).

Every mistake in those is a ``UsageError`` naming the flag and saying what to do; the command
prints it as one line and exits with status 2, before any work when argparse can tell.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import math
from pathlib import Path
from urllib.error import URLError

import torch
import torchvision

from .errors import InputError
from .graph.distributed import rank, world_size

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class UsageError(InputError):
    """A command-line argument is wrong (exit status 2, like argparse's own errors)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in ``--help`` (lists space-separated; a help text may say its own)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        shown = action.default
        if isinstance(shown, (list, tuple)):
            shown = " ".join(map(str, shown)) or "none"
        return f"{text} (default: {str(shown).replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are ``UsageError`` s: ``main`` prints one line and returns 2."""

    def error(self, message):
        raise UsageError(f"{message.removeprefix('argument ')} (see {self.prog} --help)")


def _number(kind, text: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a {'whole ' if kind is int else ''}number, got {text!r}") from None


def _checked(kind, test, wanted: str):
    def parse(text: str):
        value = _number(kind, text)
        if not test(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value
    return parse


ratio_type = _checked(float, lambda v: 0 <= v < 1, "a fraction in [0, 1) of the channels to remove")
macs_type = _checked(float, lambda v: 0 < v <= 1, "a fraction in (0, 1] of the original MACs to keep")
positive_int = _checked(int, lambda v: v >= 1, "a whole number >= 1")
count_type = _checked(int, lambda v: v >= 0, "a whole number >= 0")
positive_float = _checked(float, lambda v: v > 0 and math.isfinite(v), "a number > 0")


def max_batches_type(text: str) -> int | None:
    """``--max-batches``: a count, or ``all`` / ``0`` for every batch (``None``)."""
    return None if text.strip().lower() == "all" else count_type(text) or None


def load_model(spec: str, weights: str | None = None) -> torch.nn.Module:
    """A torchvision model by name (random weights unless ``weights``), or the result of calling ``module:callable``."""
    model = _call_factory(spec, weights) if ":" in spec else _torchvision_model(spec, weights)
    if not isinstance(model, torch.nn.Module):
        raise UsageError(f"MODEL: {spec!r} gave a {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


def check_model_spec(spec: str, weights: str | None) -> None:
    """Refuse an unknown torchvision name or weights name, and ``--weights`` with a ``module:callable`` MODEL."""
    if ":" in spec:
        if weights is not None:
            raise UsageError(f"--weights: applies to torchvision model names only; {spec!r} builds its own model "
                             "(load the weights inside the callable, or leave --weights out)")
        return
    if spec not in torchvision.models.list_models():
        raise UsageError(f"MODEL: {spec!r} is not a torchvision model name nor module:callable")
    known = [w.name for w in torchvision.models.get_model_weights(spec)]
    if weights is not None and weights.rpartition(".")[2] not in [*known, "DEFAULT"]:
        raise UsageError(f"--weights: {spec} has no weights {weights!r}; choose one of {', '.join(known) or 'none'}"
                         " or DEFAULT, or leave --weights out for random weights")


def _call_factory(spec: str, weights: str | None):
    check_model_spec(spec, weights)
    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"MODEL: cannot load {spec!r} ({error}); expected module:callable") from error
    return factory()


def _torchvision_model(name: str, weights: str | None) -> torch.nn.Module:
    check_model_spec(name, weights)
    try:
        return torchvision.models.get_model(name, weights=weights)
    except URLError as error:
        raise UsageError(f"--weights: cannot download {weights} for {name} ({error.reason}); connect to the "
                         f"internet or put the file in {torch.hub.get_dir()}/checkpoints, or leave --weights "
                         "out for random weights") from error


def load_data(spec: str, size: int, samples: int, batch_size: int, channels: int = 3, seed: int = 0):
    """Calibration batches and a line saying what they are.

    ``synthetic``: Gaussian noise. ``imagefolder:PATH``: labelled images from every class of PATH,
    ``samples`` of them taken round-robin over the classes, each class's images shuffled with ``seed``.
    """
    where = f" (rank {rank()} of {world_size()} takes batch 1 in {world_size()})" if world_size() > 1 else ""
    if spec == "synthetic":
        data = torch.randn(samples, channels, size, size, generator=torch.Generator().manual_seed(seed))
        described = f"calibration: {samples} synthetic images (Gaussian noise, seed {seed}){where}"
        return _my_share(list(data.split(batch_size))), described
    check_data_spec(spec)
    path = spec.partition(":")[2]
    dataset = _image_folder(path, size)
    indices = stratified_indices(dataset.targets, samples, seed)
    classes = len({dataset.targets[i] for i in indices})
    subset = torch.utils.data.Subset(dataset, [i for b in _my_share(_chunks(indices, batch_size)) for i in b])
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size)
    return loader, f"calibration: {len(indices)} images from {classes} classes of {path} (seed {seed}){where}"


def _chunks(items: list, size: int) -> list[list]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def _my_share(batches: list) -> list:
    """Under torchrun, this rank's batches: every ``world_size``-th, so the ranks' batches together are one
    process's (sums over batches, as the criteria reduce, then equal one process's)."""
    return batches[rank()::world_size()]


def check_data_spec(spec: str) -> None:
    """Refuse a ``--data`` value that is neither ``synthetic`` nor ``imagefolder:`` an existing folder."""
    kind, _, path = spec.partition(":")
    if spec != "synthetic" and (kind != "imagefolder" or not path):
        raise UsageError(f"--data: expected 'synthetic' or 'imagefolder:PATH', got {spec!r}")
    if kind == "imagefolder" and not Path(path).is_dir():
        raise UsageError(f"--data: no folder {path!r}; give imagefolder:PATH, PATH holding one folder of "
                         "images per class")


def _image_folder(path: str, size: int):
    transforms = torchvision.transforms
    transform = transforms.Compose([transforms.Resize(size * 256 // 224), transforms.CenterCrop(size),
                                    transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    try:
        return torchvision.datasets.ImageFolder(path, transform=transform)
    except FileNotFoundError as error:
        raise UsageError(f"--data: {error}; PATH must hold one folder of images per class") from error


def stratified_indices(targets, samples: int, seed: int = 0) -> list[int]:
    """``samples`` indices taken round-robin over the labels in ``targets`` (classes and members shuffled)."""
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(targets):
        by_class.setdefault(int(label), []).append(index)
    members = [by_class[label] for label in sorted(by_class)]
    queues = [[group[j] for j in torch.randperm(len(group), generator=generator).tolist()] for group in members]
    queues = [queues[j] for j in torch.randperm(len(queues), generator=generator).tolist()]
    rounds = itertools.zip_longest(*queues)
    return [index for row in rounds for index in row if index is not None][:samples]
