"""Record every node's tensor shapes in ``node.meta['tensor_meta']``, and read them back.

Shapes come from a run on ``meta`` tensors when the graph allows (no arithmetic), else from a real
run. Ops whose output has their input's shape can be answered without running their meta kernel:
the caller passes those shortcuts (``rules.shape_shortcuts()``: each is a fact on its op's rule).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.fx
import torch.nn.functional as F
from torch.fx.passes.shape_prop import TensorMetadata

from ..errors import InputError, torch_message
from .module_copy import copy_module, with_own_buffers
from .outputs import classes_per_row

# A module type -> a check of the module against its input, for modules whose output has the input's shape.
ShapeShortcuts = Mapping[type, Callable[[torch.nn.Module, torch.Tensor], None]]


def _mutable(value):
    """A plain copy of FX's immutable list/dict literals (nested), as the compiled code would pass."""
    if isinstance(value, list):
        return [_mutable(v) for v in value]
    if type(value) is tuple:
        return tuple(_mutable(v) for v in value)
    if isinstance(value, dict):
        return {k: _mutable(v) for k, v in value.items()}
    return value


def _metadata(value):
    """What FX's ``ShapeProp`` records for a tensor, without its costly memory-format probe."""
    if isinstance(value, torch.Tensor):
        return TensorMetadata(value.shape, value.dtype, value.requires_grad, value.stride(), None,
                              value.is_quantized, {})
    if isinstance(value, list):
        return [_metadata(v) for v in value]
    if isinstance(value, tuple):  # named tuples (torch.return_types) become plain ones
        return tuple(_metadata(v) for v in value)
    if isinstance(value, dict):
        return {k: _metadata(v) for k, v in value.items()}
    return value


def _holds_tensor(value) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (tuple, list)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return False


class ShapePropagation(torch.fx.Interpreter):
    """Runs a GraphModule and records each node's tensor shapes in ``node.meta['tensor_meta']``.

    Lighter than FX's ``ShapeProp`` (which probes every tensor's memory format), and each call gets
    fresh, mutable copies of literal lists in the node's arguments: a GraphModule's generated code
    builds ``[8, 7, 7]`` anew on every call, and some wrapped functions (Swin3D's
    ``_get_window_and_shift_size``) write into such a list. A failing node's name is attached to the
    error as ``fxprune_node``.
    """

    def fetch_args_kwargs_from_env(self, n: torch.fx.Node):
        args, kwargs = super().fetch_args_kwargs_from_env(n)
        return tuple(_mutable(a) for a in args), {k: _mutable(v) for k, v in kwargs.items()}

    def run_node(self, n: torch.fx.Node):
        try:
            result = super().run_node(n)
        except Exception as error:
            if not hasattr(error, "fxprune_node"):
                error.fxprune_node = n.name
            raise
        if _holds_tensor(result):
            n.meta["tensor_meta"] = _metadata(result)
        return result

    def propagate(self, *inputs):
        return self.run(*inputs)


class MetaShapePropagation(ShapePropagation):
    """``ShapePropagation`` on a ``meta`` copy of the module: the same shapes, no arithmetic, and no
    change to the module's own state (BatchNorm statistics in training mode).

    Module types in ``shortcuts`` (norms and activations) are answered directly: their meta kernels
    are Python decompositions, slower than the real ops on small inputs.
    """

    def __init__(self, gm: torch.fx.GraphModule, shortcuts: ShapeShortcuts | None = None):
        super().__init__(copy_module(gm, _on_meta), graph=gm.graph)
        self.shortcuts = shortcuts or {}

    def propagate(self, *inputs):
        return self.run(*(_on_meta(t) if isinstance(t, torch.Tensor) else t for t in inputs))

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        check = self.shortcuts.get(type(module))
        if check is not None and len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
            check(module, args[0])
            return torch.empty_like(args[0])
        return super().call_module(target, args, kwargs)


def _on_meta(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to("meta")


def propagate_shapes(gm: torch.fx.GraphModule, inputs: tuple, shortcuts: ShapeShortcuts | None = None) -> None:
    """Run ``inputs`` through ``gm`` and store each node's shapes in ``node.meta['tensor_meta']``."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    required = [n.target for n in placeholders if not n.args]  # a placeholder's args hold its default
    if not len(required) <= len(inputs) <= len(placeholders):
        raise InputError(_count_message(placeholders, len(required), inputs))
    try:
        record_shapes(gm, inputs, shortcuts)
    except Exception as error:
        node = getattr(error, "fxprune_node", None)
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs if isinstance(t, torch.Tensor))
        raise InputError(
            f"data: the model rejects inputs of shape {shapes}{f' at node {node}' if node else ''}: "
            f"{type(error).__name__}: {torch_message(error)}. Pass inputs the model accepts{_dtype_hint(inputs)}."
        ) from error


def _count_message(placeholders: list[torch.fx.Node], required: int, inputs: tuple) -> str:
    names = ", ".join(n.target for n in placeholders)
    if len(placeholders) == 1 and len(inputs) == 2 and _looks_like_soft_targets(inputs[1]):
        return (f"data: the model takes 1 input ({names}) but got 2, and the second looks like one-hot or probability "
                "targets; targets must be class indices (int64), e.g. (x, targets.argmax(1))")
    counts = f"{required} to {len(placeholders)}" if required < len(placeholders) else required
    return (f"data: the model takes {counts} input(s) ({names}) but got {len(inputs)}; "
            "pass several inputs as a tuple (x, y)")


def _looks_like_soft_targets(value) -> bool:
    """A float matrix of values in [0, 1]: one-hot, multi-hot or probability rows."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() != 2:
        return False
    return value.device.type != "meta" and bool(((value >= 0) & (value <= 1)).all())


_CONV_FUNCTIONS = {F.conv1d: 3, F.conv2d: 4, F.conv3d: 5}


def _convolution_reading(gm: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[str, int] | None:
    """The first convolution that reads ``node`` as its input, and how many dims it takes with the batch."""
    for user in node.users:
        if not user.args or user.args[0] is not node:
            continue
        if user.op == "call_module":
            module = gm.get_submodule(user.target)
            if isinstance(module, torch.nn.modules.conv._ConvNd):
                return f"{user.target} ({type(module).__name__})", len(module.kernel_size) + 2
        if user.op == "call_function" and user.target in _CONV_FUNCTIONS:
            return f"{user.name} ({user.target.__name__})", _CONV_FUNCTIONS[user.target]
    return None


def check_batch_dims(gm: torch.fx.GraphModule, inputs: tuple) -> None:
    """Refuse an input that its first convolution would read as unbatched: fxprune takes dim 0 as the batch."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, tensor in zip(placeholders, inputs):
        found = _convolution_reading(gm, node) if isinstance(tensor, torch.Tensor) else None
        if found and tensor.dim() == found[1] - 1:
            raise InputError(f"data: got shape {tuple(tensor.shape)} for {node.target}, but {found[0]} takes "
                             f"{found[1]} dims with the batch first: missing batch dimension? "
                             f"use {node.target}.unsqueeze(0)")


def record_shapes(gm: torch.fx.GraphModule, inputs: tuple, shortcuts: ShapeShortcuts | None = None) -> None:
    """Store every node's shapes: from a run on ``meta`` tensors when the graph allows, else a real run.

    Only shapes are needed, and a meta run computes them without arithmetic (resnet50, batch 1:
    0.03 s against 0.15 s for a real run). Code that needs values (``.item()``, data-dependent shapes,
    tensors made on the CPU inside ``forward``) fails on meta; the real run then decides, so its
    errors are the ones a user sees. It runs on copies of the buffers: a graph traced in training
    mode updates BatchNorm statistics, and ``gm``'s buffers may be the user's.
    """
    with torch.no_grad():
        try:
            MetaShapePropagation(gm, shortcuts).propagate(*inputs)
            return
        except Exception:
            pass
        ShapePropagation(with_own_buffers(gm), graph=gm.graph).propagate(*inputs)


def _dtype_hint(inputs: tuple) -> str:
    kinds = sorted({str(t.dtype) for t in inputs if isinstance(t, torch.Tensor) and not t.is_floating_point()})
    return f" (the data holds {', '.join(kinds)} values: does the model expect x.float()?)" if kinds else ""


def output_classes(gm: torch.fx.GraphModule) -> int | None:
    """The classes a cross-entropy on the first output sees: its size per sample (None without such an output)."""
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    shapes = tensor_shapes(output)
    shape = shapes[()] if () in shapes else shapes.get((0,))
    return classes_per_row(shape) if shape is not None and len(shape) >= 2 else None


def tensor_shapes(node: torch.fx.Node) -> dict[tuple[int, ...], torch.Size]:
    """Shapes of the tensors a node produces, keyed by their position in a nested output.

    A plain tensor output has key ``()``; element ``i`` of a tuple output has key ``(i,)``.
    """
    meta = node.meta.get("tensor_meta")
    found: dict[tuple[int, ...], torch.Size] = {}

    def visit(value, path):
        if isinstance(value, torch.fx.passes.shape_prop.TensorMetadata):
            found[path] = value.shape
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                visit(item, path + (i,))
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, path + (key,))

    visit(meta, ())
    return found
