"""Copies of a module tree that share no tensors with the original.

``rewrite`` copies with sliced weights; shape runs copy onto the ``meta`` device, where ops compute
shapes and no arithmetic. Much cheaper than ``copy.deepcopy`` on large models: containers are
copied one level deep, and an alias of a shared parameter stays one parameter.
"""

from __future__ import annotations

from typing import Callable

import torch


def copy_module(module: torch.nn.Module, convert: Callable[[torch.Tensor], torch.Tensor],
                memo: dict[int, object] | None = None) -> torch.nn.Module:
    """A copy of ``module`` whose every tensor is ``convert(tensor)``.

    ``memo`` maps the ``id`` of an old tensor (or module) to its replacement, for the tensors the
    caller has made already. Parameters stay parameters, with their ``requires_grad``; tensors held
    as plain attributes (FX's constants) are converted too.
    """
    memo = {} if memo is None else memo
    if id(module) in memo:
        return memo[id(module)]
    clone = module.__class__.__new__(module.__class__)
    clone.__dict__ = {k: _copied_attribute(v, convert, memo) for k, v in module.__dict__.items()}
    memo[id(module)] = clone
    for table in ("_parameters", "_buffers"):
        for name, tensor in getattr(module, table).items():
            if tensor is not None and id(tensor) not in memo:
                fresh = convert(tensor.detach())
                memo[id(tensor)] = torch.nn.Parameter(fresh, tensor.requires_grad) if table == "_parameters" else fresh
            getattr(clone, table)[name] = None if tensor is None else memo[id(tensor)]
    for name, child in module._modules.items():
        clone._modules[name] = None if child is None else copy_module(child, convert, memo)
    return clone


def with_own_buffers(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` that shares its parameters and holds copies of its buffers (and tensor
    constants): for runs that may write buffers in place (BatchNorm statistics in training mode).
    A GraphModule's copy has no ``forward`` (FX makes a class per instance): run it with an ``Interpreter``."""
    return copy_module(module, torch.clone, {id(p): p for p in module.parameters()})


def _copied_attribute(value, convert, memo):
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = convert(value.detach())
        return memo[id(value)]
    return value.copy() if isinstance(value, (dict, list, set)) else value
