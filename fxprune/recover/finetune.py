"""Short fine-tuning of a pruned model, optionally distilled from the original (knowledge distillation).

    small = fxprune.finetune(small, loader, teacher=model, epochs=1)

With a ``teacher`` the loss is ``kd_weight · T² · KL(student/T ‖ teacher/T) + (1 − kd_weight) · CE``
(Hinton et al.); batches without labels use the distillation term alone. SGD with momentum and a
cosine learning rate; runs on CUDA when present, returns a trained copy on the model's device.

The gradient's norm is clipped (``max_grad_norm``, default 5): a net pruned unevenly, with layers
cut to a few channels, can start with gradients large enough that the first momentum steps undo
the pruning's weight reconstruction (measured: a MobileNetV2-style net fell from 73.6% to 38.4% in
15 steps at lr 0.01; clipped, it rose to 84.4%).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..graph.inputs import Batch, as_batches, check_targets


def _logits(outputs) -> torch.Tensor:
    logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
    return logits.flatten(1) if logits.dim() > 2 else logits


def distillation_loss(student, teacher, targets, temperature: float, kd_weight: float) -> torch.Tensor:
    """Cross-entropy on labels blended with the KL divergence to the teacher's softened outputs."""
    terms = []
    if teacher is not None:
        soft = F.kl_div(F.log_softmax(student / temperature, 1), F.softmax(teacher / temperature, 1),
                        reduction="batchmean") * temperature**2
        terms.append((kd_weight if targets is not None else 1.0) * soft)
    if targets is not None:
        terms.append((1 - kd_weight if teacher is not None else 1.0) * F.cross_entropy(student, targets))
    if not terms:
        raise InputError("finetune: the data has no labels; pass a teacher to distill from")
    return sum(terms)


def _moved(batch: Batch, device) -> Batch:
    targets = batch.targets.to(device) if batch.targets is not None else None
    return Batch(tuple(t.to(device) for t in batch.inputs), targets)


def finetune(model: torch.nn.Module, data, *, teacher: torch.nn.Module | None = None, epochs: float = 1,
             lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 5e-4, temperature: float = 4.0,
             kd_weight: float = 0.9, max_steps: int | None = None, max_grad_norm: float | None = 5.0,
             device=None) -> torch.nn.Module:
    """Train a copy of ``model`` on ``data`` for ``epochs`` passes (or ``max_steps`` batches);
    ``max_grad_norm=None`` turns the gradient clipping off."""
    if max_grad_norm is not None and (isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, (int, float))
                                      or not max_grad_norm > 0):
        raise InputError(f"finetune: max_grad_norm must be a positive number or None, got {max_grad_norm!r}")
    batches = as_batches(data) if not isinstance(data, torch.utils.data.DataLoader) else None
    per_epoch = len(batches) if batches is not None else len(data)
    steps = max_steps if max_steps is not None else max(1, math.ceil(epochs * per_epoch))
    original = next(model.parameters()).device
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    student = copy.deepcopy(model).to(device).train()
    teacher = copy.deepcopy(teacher).to(device).eval() if teacher is not None else None
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    step = 0
    while step < steps:
        for item in batches if batches is not None else data:
            batch = _moved(item if isinstance(item, Batch) else as_batches(item)[0], device)
            with torch.no_grad():
                target_logits = _logits(teacher(*batch.inputs)) if teacher is not None else None
            logits = _logits(student(*batch.inputs))
            check_targets(batch, logits.shape[1] if logits.dim() > 1 else None, f"batch {step}")
            loss = distillation_loss(logits, target_logits, batch.targets, temperature, kd_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(student.parameters(), max_grad_norm)
            optimizer.step()
            schedule.step()
            step += 1
            if step >= steps:
                break
    return student.eval().to(original)
