"""Reading what a model returns, whatever the structure of its outputs: its logits, all its tensors,
and the difference between two models' outputs."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch


def logits_of(outputs) -> torch.Tensor:
    """The logits a loss reads, one row per prediction: the output itself, the first of a tuple, or the
    ``logits`` of a dict-like output (Hugging Face's ``ModelOutput``). A (batch, tokens, classes)
    output (a token classifier, a language model) gives a row per token; a (batch, classes, ...)
    map is flattened to one row per sample."""
    if isinstance(outputs, Mapping):
        outputs = outputs["logits"] if "logits" in outputs else next(iter(outputs.values()))
    elif isinstance(outputs, (tuple, list)):
        outputs = outputs[0]
    return outputs.reshape(-1, classes_per_row(outputs.shape)) if outputs.dim() > 2 else outputs


def classes_per_row(shape) -> int:
    """The width of one row of ``logits_of`` for an output of ``shape`` (at least 2 dims): the last dim
    of a (batch, tokens, classes) output, all but the batch dim otherwise."""
    return int(shape[-1]) if len(shape) == 3 else math.prod(int(s) for s in shape[1:])


def labels_of(targets: torch.Tensor | None) -> torch.Tensor | None:
    """Class-index targets one per row of ``logits_of``: a (batch, tokens) grid becomes one row per token."""
    if targets is None or targets.is_floating_point():
        return targets
    return targets.reshape(-1)


def predicted_labels(outputs) -> torch.Tensor:
    """The model's own predictions, one per row of ``logits_of``: the labels of data that has none."""
    return logits_of(outputs).detach().argmax(1)


def flat_outputs(value) -> list[torch.Tensor]:
    """Every tensor in a model's output (a tensor, or tuples, lists and dicts of them), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in flat_outputs(item)]
    return []


def compare(pruned: torch.nn.Module, reference: torch.nn.Module, inputs: tuple) -> tuple[float, float]:
    """Largest absolute difference between the two models' outputs, and the reference's scale."""
    with torch.no_grad():
        got, want = flat_outputs(pruned(*inputs)), flat_outputs(reference(*inputs))
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        shapes = [tuple(g.shape) for g in got], [tuple(w.shape) for w in want]
        raise AssertionError(f"output shapes differ: {shapes[0]} vs {shapes[1]}")
    diff = max(float((g - w).abs().max()) for g, w in zip(got, want))
    scale = max(float(w.abs().max()) for w in want)
    return diff, scale
