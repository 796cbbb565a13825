"""Trace a model to an FX GraphModule (shapes are recorded by ``graph.shapes``).

Failures become ``TraceError`` naming the user's code, with the ways out: mark the module as a
leaf, pass ``concrete_args``, or prune a submodule that traces.
"""

from __future__ import annotations

import traceback

import torch
import torch.fx

from ..errors import TraceError


class _Tracer(torch.fx.Tracer):
    """The default tracer, with extra leaf modules named by the user."""

    def __init__(self, leaf_types: tuple[type, ...] = ()):
        super().__init__()
        self.leaf_types = leaf_types

    def is_leaf_module(self, module: torch.nn.Module, qualified_name: str) -> bool:
        if self.leaf_types and isinstance(module, self.leaf_types):
            return True
        return super().is_leaf_module(module, qualified_name)


def _user_frame(error: BaseException) -> str:
    """The innermost stack frame of the error that is not inside torch itself."""
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        if "/torch/" not in frame.filename.replace("\\", "/"):
            return f'{frame.filename}:{frame.lineno} in {frame.name}: "{(frame.line or "").strip()}"'
    return "unknown location"


def trace(model: torch.nn.Module, leaf_types: tuple[type, ...] = (), concrete_args=None) -> torch.fx.GraphModule:
    """Symbolically trace ``model``; raise ``TraceError`` that points at the untraceable line."""
    if isinstance(model, torch.fx.GraphModule):
        return model
    tracer = _Tracer(leaf_types)
    try:
        graph = tracer.trace(model, concrete_args=concrete_args)
    except Exception as error:  # FX raises many kinds; all mean "cannot trace"
        raise TraceError(
            f"torch.fx cannot trace {type(model).__name__}: {type(error).__name__}: {error} "
            f"(at {_user_frame(error)}). Ways out: mark the offending module as a leaf "
            "(leaf_modules=(MyBlock,)), pass concrete_args for Python control flow on inputs, "
            "or prune a submodule that traces with fxprune.compress_submodule."
        ) from error
    name = type(model).__name__
    return torch.fx.GraphModule(tracer.root, graph, name)
