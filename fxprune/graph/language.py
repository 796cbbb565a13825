"""Causal language models: text without labels is labelled by its own next tokens.

A causal language model's logits at position ``t`` predict token ``t + 1``, so the labels its own
training loss reads are the input ids shifted by one. ``compress`` gives those to the methods that
read labels (``taylor``, MLACP's classification term) when the data has none, instead of the
model's own predictions; the last position and the padding predict nothing (``IGNORED_TARGET``).
"""

from __future__ import annotations

import sys

import torch

from .inputs import IGNORED_TARGET, Batch


def is_causal_lm(model: torch.nn.Module) -> bool:
    """A Hugging Face causal language model (a class of transformers' causal-LM auto mapping).

    transformers is never imported here: a model of that library has imported it already."""
    if "transformers" not in sys.modules:
        return False
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:
        return False
    names = {name for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
             for name in ((value,) if isinstance(value, str) else value)}
    return type(model).__name__ in names


def with_next_token_targets(batch: Batch) -> Batch:
    """``batch`` with targets ``input_ids[:, 1:]`` (the last position and padding ignored); unchanged
    when it has targets already or no 2-d integer ``input_ids``."""
    ids = batch.kwargs.get("input_ids")
    if batch.targets is not None or ids is None or ids.dim() != 2 or ids.is_floating_point():
        return batch
    targets = torch.full_like(ids, IGNORED_TARGET)
    targets[:, :-1] = ids[:, 1:]
    mask = batch.kwargs.get("attention_mask")
    if mask is not None and mask.shape == ids.shape:
        targets[:, :-1][mask[:, 1:] == 0] = IGNORED_TARGET
    return Batch(batch.inputs, targets)
