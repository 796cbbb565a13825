"""Capture a model as an FX GraphModule (shapes are recorded by ``graph.shapes``).

``capture``: ``"fx"`` (symbolic tracing), ``"export"`` (``torch.export``, see ``graph.exported``) or
``"auto"``: FX first — fast, and what every FX-traceable model got before — then ``torch.export``;
keyword inputs (a dict batch) go to ``torch.export`` straight away: FX takes positional inputs only.
Failures become ``TraceError`` naming the user's code, with the ways out: mark the module as a
leaf, pass ``concrete_args``, or prune a submodule that traces.
"""

from __future__ import annotations

import inspect
import traceback

import torch
import torch.fx

from ..errors import InputError, TraceError, torch_message
from .exported import export_graph
from .inputs import keywords_of

_PLAIN = (bool, int, float, str, type(None))
CAPTURES = ("auto", "fx", "export")


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


def _check_concrete_args(model: torch.nn.Module, concrete_args) -> None:
    if concrete_args is None:
        return
    if not isinstance(concrete_args, dict):
        raise InputError(f"concrete_args: expected a dict of forward's argument names to values (like "
                         f"{{'flag': True}}), got {type(concrete_args).__name__}")
    names = list(inspect.signature(model.forward).parameters)
    unknown = [name for name in concrete_args if name not in names]
    if unknown:
        raise InputError(f"concrete_args: {type(model).__name__}.forward has no argument {unknown[0]!r}; "
                         f"its arguments are {', '.join(names)}")


def _concrete_defaults(graph: torch.fx.Graph, concrete_args) -> None:
    """Make each plain value in ``concrete_args`` its placeholder's default (FX keeps forward's own), so the
    traced model runs without it, as it was traced; passing another value still fails FX's check."""
    placeholders = {n.target: n for n in graph.nodes if n.op == "placeholder"}
    for name, value in (concrete_args or {}).items():
        node = placeholders.get(f"{name}_1")  # FX's name for the placeholder of a concrete value
        if node is not None and isinstance(value, _PLAIN):
            node.args = (value,)


def trace(model: torch.nn.Module, leaf_types: tuple[type, ...] = (), concrete_args=None) -> torch.fx.GraphModule:
    """Symbolically trace ``model``; raise ``TraceError`` that points at the untraceable line.

    ``concrete_args``: values of forward's arguments fixed while tracing (Python control flow on a flag).
    """
    if isinstance(model, torch.fx.GraphModule):
        return model
    _check_concrete_args(model, concrete_args)
    tracer = _Tracer(leaf_types)
    try:
        graph = tracer.trace(model, concrete_args=concrete_args)
    except Exception as error:  # FX raises many kinds; all mean "cannot trace"
        raise TraceError(
            f"torch.fx cannot trace {type(model).__name__}: {type(error).__name__}: {torch_message(error)} "
            f"(at {_user_frame(error)}). Ways out: mark the offending module as a leaf "
            "(leaf_modules=(MyBlock,)), fix the arguments Python control flow branches on "
            "(concrete_args={'flag': True}), or prune a submodule that traces with fxprune.compress_submodule."
        ) from error
    _concrete_defaults(graph, concrete_args)
    name = type(model).__name__
    return torch.fx.GraphModule(tracer.root, graph, name)


def capture_graph(model: torch.nn.Module, inputs: tuple, capture: str = "auto", leaf_types: tuple[type, ...] = (),
                  concrete_args=None) -> torch.fx.GraphModule:
    """``model`` as a GraphModule, by the ``capture`` asked for (module docstring)."""
    if capture not in CAPTURES:
        raise InputError(f"capture: expected one of {', '.join(map(repr, CAPTURES))}, got {capture!r}")
    keywords = keywords_of(inputs)
    if keywords and capture == "fx":
        raise InputError(f"data: a dict batch (keyword inputs {', '.join(keywords)}) needs capture='export' or "
                         "'auto'; torch.fx traces positional inputs only")
    if (capture == "export" or keywords) and not isinstance(model, torch.fx.GraphModule):
        return export_graph(model, inputs)
    try:
        return trace(model, leaf_types, concrete_args)
    except TraceError as fx_error:
        if capture == "fx" or leaf_types or concrete_args is not None:
            raise
        try:
            return export_graph(model, inputs)
        except TraceError as export_error:
            raise TraceError(f"neither capture can take {type(model).__name__}. {fx_error} -- and {export_error}. "
                             "Try capture='export' after fixing what torch.export names, or compress a submodule "
                             "with fxprune.compress_submodule.") from export_error
