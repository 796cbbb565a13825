"""First-order Taylor importance: ``sum |w · dL/dw|`` over the weights a channel owns.

The loss is cross-entropy on the batch's labels, or on the model's own predictions when the data
has none (so the score measures how much the channel supports what the model already says).
Under ``torch.distributed`` the accumulated ``|w · dL/dw|`` is summed over the ranks before scoring,
so every rank ranks the sums one process given all ranks' batches would.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...analysis.analyze import Analysis
from ...graph.distributed import all_reduce_sum
from ...graph.inputs import check_targets
from ...graph.outputs import labels_of, logits_of, predicted_labels
from ...graph.shapes import output_classes
from ...graph.tensors import param_name
from .magnitude import parameter


def classification_loss(outputs, targets) -> torch.Tensor:
    """Cross-entropy against ``targets``, or against the outputs' own argmax when there are none."""
    labels = labels_of(targets) if targets is not None else predicted_labels(outputs)
    return F.cross_entropy(logits_of(outputs), labels)


def taylor(analysis: Analysis, batches) -> list[np.ndarray]:
    gm = analysis.gm
    named = {n: p for n, p in gm.named_parameters() if p.requires_grad}
    totals = {name: torch.zeros_like(p) for name, p in named.items()}
    classes = output_classes(gm)
    for i, batch in enumerate(batches):
        check_targets(batch, classes, f"batch {i}")
    for batch in batches:
        loss = classification_loss(gm(*batch.inputs), batch.targets)
        grads = torch.autograd.grad(loss, list(named.values()), allow_unused=True)  # leaves .grad alone
        for (name, p), grad in zip(named.items(), grads):
            if grad is not None:
                totals[name] += (p.detach() * grad).abs()
    for total in totals.values():
        all_reduce_sum(total)
    scores = []
    for group in analysis.groups:
        score = np.zeros(group.size)
        for member in group.params(analysis.table):
            total = totals.get(param_name(member.ref.key))
            if total is None:
                total = parameter(analysis, member.ref.key).detach().abs() * 0
            other = [d for d in range(total.dim()) if d != member.ref.dim]
            values = (total.sum(other) if other else total).double().cpu().numpy()
            score += values[member.index].sum(axis=1)
        scores.append(score)
    return scores
