"""Running inside ``torch.distributed``: each rank holds a shard of the data, every rank ends with the same plan.

When a process group is initialised, every data-driven sum a method decides on (Taylor's ``|w·g|``,
reconstruction energies, the refit's normal equations, BatchNorm statistics, MLACP's sensitivities
and gradients) is summed over the ranks with ``all_reduce_sum`` before it is used, so each rank
decides on the same numbers. Without a group every function here is a no-op and fxprune runs as
in one process. Graph is the lowest stage, so every stage may use this module.

A collective hangs when one rank skips it; ``check_same`` turns the commonest cause, ranks called
with different arguments, into an ``InputError`` on every rank before any work, and
``failing_together`` does the same for a step that may fail on one rank only (reading its shard).
"""

from __future__ import annotations

import hashlib

import torch
import torch.distributed as dist

from ..errors import InputError

_SHOWN = 60  # characters of a differing value quoted in the error


def active() -> bool:
    """Whether a process group is initialised (and so whether sums are reduced across ranks)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0, or the only process: the one that prints progress."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place and return it (unchanged without a group).

    NCCL reduces CUDA tensors only: a CPU tensor (scores kept in NumPy) goes through the current
    CUDA device there.
    """
    if world_size() == 1:
        return tensor
    if tensor.device.type == "cpu" and dist.get_backend() == "nccl":
        on_device = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        return tensor.copy_(on_device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Average ``tensor`` over the ranks in place and return it (unchanged without a group)."""
    size = world_size()
    return all_reduce_sum(tensor).div_(size) if size > 1 else tensor


def average_buffers(module: torch.nn.Module) -> None:
    """Average every floating-point buffer (BatchNorm's running statistics) over the ranks, in place."""
    if world_size() == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            all_reduce_mean(buffer.data)


def largest(value: int) -> int:
    """The largest ``value`` any rank holds (``value`` itself without a group)."""
    if world_size() == 1:
        return value
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return max(gathered)


def check_same(name: str, value, why: str = "every rank must pass the same value") -> None:
    """Raise ``InputError`` on every rank unless every rank passed the same ``value`` (its ``str``).

    Every rank gathers every rank's digest (``all_gather_object`` completes when all ranks call it,
    whatever they pass), so all ranks see the same mismatch and raise the same error: none is left
    waiting in a later collective.
    """
    if world_size() == 1:
        return
    text = str(value)
    mine = (hashlib.sha256(text.encode()).hexdigest(), text[:_SHOWN])
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, mine)
    differ = [r for r, (digest, _) in enumerate(gathered) if digest != gathered[0][0]]
    if differ:
        shown = ", ".join(f"{gathered[r][1]} on rank {r}" for r in [0, *differ])
        raise InputError(f"{name}: {why}, but rank(s) "
                         f"{', '.join(map(str, differ))} differ from rank 0 ({shown})")


def failing_together(function):
    """``function()``, but when it raises on any rank every rank raises (the others an ``InputError``
    naming that rank and its error), so no rank goes on to wait for one that stopped."""
    if world_size() == 1:
        return function()
    try:
        result, error = function(), None
    except Exception as raised:  # any error: a rank that stops leaves the others waiting
        result, error = None, raised
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, message) for r, message in enumerate(gathered) if message is not None]
    if failed:
        r, message = failed[0]
        raise InputError(f"rank {r} failed, so every rank stops: {message}")
    return result
