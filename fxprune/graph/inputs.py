"""Turn the many forms of ``data`` a user may pass into a list of ``Batch`` values.

``data`` may be a tensor of inputs, an ``(inputs, targets)`` tuple (or a tuple of several inputs),
or an iterable (a list, a DataLoader) of either. A dict of tensors (a tokenizer's output:
``{"input_ids": ..., "attention_mask": ...}``), alone or as the inputs of an ``(inputs, targets)`` pair,
is the model's keyword arguments. Everything downstream sees ``Batch(inputs, targets)``: ``inputs``
the graph's inputs in order (an ``Inputs`` tuple: the positional arguments, then the keyword ones,
named by ``Inputs.keywords``), ``targets`` a tensor or ``None``.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..errors import InputError


class Inputs(tuple):
    """The graph's inputs, in order: the model's positional arguments, then the last ``len(keywords)``
    given by name (a dict batch). Positional inputs stay a plain tuple. A captured graph takes them
    positionally, and the pruned model by name too."""

    keywords: tuple[str, ...] = ()

    def __new__(cls, values=(), keywords=()):
        inputs = super().__new__(cls, values)
        inputs.keywords = tuple(keywords)
        return inputs

    @property
    def args(self) -> tuple:
        return tuple(self[:len(self) - len(self.keywords)])

    @property
    def kwargs(self) -> dict:
        return dict(zip(self.keywords, self[len(self) - len(self.keywords):]))


def keywords_of(inputs) -> tuple[str, ...]:
    """The names of the keyword inputs among ``inputs`` (none for a plain tuple)."""
    return getattr(inputs, "keywords", ())


@dataclass(frozen=True)
class Batch:
    inputs: tuple
    targets: torch.Tensor | None = None

    @property
    def args(self) -> tuple:
        """Positional arguments for the user's model: ``model(*batch.args, **batch.kwargs)``."""
        return self.inputs.args if isinstance(self.inputs, Inputs) else tuple(self.inputs)

    @property
    def kwargs(self) -> dict:
        return self.inputs.kwargs if isinstance(self.inputs, Inputs) else {}

    @property
    def size(self) -> int:
        return int(self.inputs[0].shape[0]) if self.inputs and self.inputs[0].dim() else 1


def _looks_like_targets(inputs, targets) -> bool:
    """An ``(x, y)`` pair: ``y`` holds one integer label (or one row) per sample of ``x``."""
    return (
        isinstance(inputs, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and targets.dim() >= 1
        and inputs.dim() >= 1
        and targets.shape[0] == inputs.shape[0]
        and not targets.is_floating_point()
    )


def required_inputs(model: torch.nn.Module) -> int | None:
    """How many positional arguments ``model.forward`` requires (None when it takes ``*args``)."""
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty for p in parameters)


def _keyword_inputs(item: Mapping, where: str) -> Inputs:
    """A dict batch as keyword inputs; entries that are ``None`` are left out (the model's defaults)."""
    keys = [key for key, value in item.items() if value is not None]
    bad = [key for key in keys if not isinstance(key, str) or not key.isidentifier()
           or not isinstance(item[key], torch.Tensor)]
    if bad or not keys:
        what = "no tensors" if not keys else f"{bad[0]!r}: {type(item[bad[0]]).__name__}"
        raise InputError(f"data: {where} is a dict with {what}; a dict batch maps forward's argument names "
                         "to tensors (a tokenizer's output: input_ids, attention_mask, ...)")
    return Inputs([item[key] for key in keys], keys)


def _to_batch(item, where: str, required: int | None = None) -> Batch:
    if isinstance(item, Mapping):
        return Batch(_keyword_inputs(item, where))
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], Mapping):
        targets = item[1]
        if targets is not None and not isinstance(targets, torch.Tensor):
            raise InputError(f"data: {where} is a (dict, {type(targets).__name__}) pair; expected (dict, targets "
                             "tensor)")
        return Batch(_keyword_inputs(item[0], where), targets)
    if isinstance(item, torch.Tensor):
        return Batch((item,))
    pair = isinstance(item, (tuple, list)) and len(item) == 2
    if pair and (required is None or required < 2) and _looks_like_targets(*item):
        return Batch((item[0],), item[1])
    if isinstance(item, (tuple, list)) and item and all(isinstance(t, torch.Tensor) for t in item):
        return Batch(tuple(item))
    raise InputError(
        f"data: {where} is a {type(item).__name__}; expected a tensor of inputs, an (inputs, targets) "
        "pair, or an iterable of those"
    )


def _check_finite(batch: Batch, where: str) -> None:
    for tensor in batch.inputs:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise InputError(f"data: {where} contains NaN or inf values; pass finite inputs")


def model_device(model: torch.nn.Module) -> torch.device | None:
    """Where the model's weights live (None for a model without any)."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return None if tensor is None else tensor.device


def _check_device(batch: Batch, where: str, device: torch.device | None) -> None:
    for tensor in batch.inputs:
        if device is not None and tensor.device != device:
            raise InputError(f"data: {where} is on {tensor.device} but the model's weights are on {device}; "
                             f"move the data (x.to({str(device)!r})) or the model")


def as_batches(data, max_batches: int | None = None, device: torch.device | None = None,
               required: int | None = None) -> list[Batch]:
    """Normalise ``data`` to at most ``max_batches`` batches (all of them when ``None``).

    ``device``: where the model's weights are; inputs elsewhere are refused before anything runs.
    ``required``: how many inputs the model requires (``required_inputs``); a model that requires
    two reads an ``(x, ids)`` pair as its two inputs even when ``ids`` looks like integer labels.
    """
    if data is None:
        raise InputError("data: got None; pass a tensor of example inputs, an (inputs, targets) pair, "
                         "or a DataLoader")
    if isinstance(data, (torch.Tensor, tuple, Mapping)):  # one batch; a list is a list of batches
        batches = [_to_batch(data, "the value given", required)]
    else:
        if not hasattr(data, "__iter__"):
            raise InputError(f"data: a {type(data).__name__} is neither a tensor nor iterable")
        limit = max_batches if max_batches is not None else math.inf
        items = itertools.islice(iter(data), None if limit == math.inf else int(limit))
        batches = [_to_batch(item, f"item {i}", required) for i, item in enumerate(items)]
    if not batches or batches[0].size == 0:
        raise InputError("data: it is empty; pass at least one example input")
    for i, batch in enumerate(batches):
        _check_device(batch, f"batch {i}", device)
        _check_finite(batch, f"batch {i}")
    return batches[:max_batches] if max_batches else batches


IGNORED_TARGET = -100  # cross-entropy's default ignore_index


def check_targets(batch: Batch, classes: int | None, where: str) -> None:
    """Refuse class-index targets outside ``[0, classes)`` before a cross-entropy meets them."""
    targets = batch.targets
    if classes is None or targets is None or targets.is_floating_point() or targets.dim() == 0:
        return  # class indices of any shape: one per sample, or one per token
    labels = targets[targets != IGNORED_TARGET]
    wrong = labels[(labels < 0) | (labels >= classes)]
    if wrong.numel():
        raise InputError(f"data: the targets of {where} hold class {int(wrong[0])} but the model outputs {classes} "
                         f"classes; targets must be class indices in [0, {classes})")


def example_inputs(batches: list[Batch], samples: int = 1) -> tuple:
    """The first ``samples`` rows of the first batch: enough to trace and to learn every shape."""
    inputs = batches[0].inputs
    rows = tuple(t[:samples] if t.dim() else t for t in inputs)
    return Inputs(rows, keywords_of(inputs)) if keywords_of(inputs) else rows


def tensor_spec(shape, dtype: torch.dtype) -> dict:
    """A JSON-ready shape and dtype (so a saved model can be rebuilt from zeros of that shape)."""
    return {"shape": list(shape), "dtype": str(dtype).removeprefix("torch.")}


def input_specs(inputs: tuple) -> list[dict]:
    """``tensor_spec`` of each input tensor; keyword inputs (a dict batch) carry their ``name`` too."""
    names = (None,) * (len(inputs) - len(keywords_of(inputs))) + keywords_of(inputs)
    specs = [(tensor_spec(t.shape, t.dtype), name) for t, name in zip(inputs, names) if isinstance(t, torch.Tensor)]
    return [spec if name is None else {**spec, "name": name} for spec, name in specs]
