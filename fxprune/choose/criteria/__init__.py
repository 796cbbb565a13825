"""Criteria: given an analysis (and data), a score per channel of every group; higher stays.

A criterion is any callable ``criterion(analysis, batches) -> list[np.ndarray]`` returning one
score array per group in ``analysis.groups``; users may pass their own.
"""

from __future__ import annotations

from typing import Callable

from ...errors import InputError
from .magnitude import bn_scale, l1, l2, random_scores
from .reconstruction import reconstruction
from .taylor import taylor

CRITERIA: dict[str, Callable] = {"l1": l1, "l2": l2, "bn_scale": bn_scale, "random": random_scores,
                                 "taylor": taylor, "reconstruction": reconstruction}


def get_criterion(method) -> Callable:
    """The criterion named ``method``, or ``method`` itself when it is callable."""
    if callable(method):
        return method
    if method not in CRITERIA:
        raise InputError(f"method: unknown criterion {method!r}; choose one of {', '.join(sorted(CRITERIA))}, "
                         "or pass a callable(analysis, batches) -> list of score arrays")
    return CRITERIA[method]
