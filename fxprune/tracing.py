"""Trace a model to an FX GraphModule and record every node's tensor shapes.

Failures become ``TraceError`` naming the user's code, with the ways out: mark the module as a
leaf, pass ``concrete_args``, or prune a submodule that traces.
"""

from __future__ import annotations

import traceback

import torch
import torch.fx
from torch.fx.passes.shape_prop import TensorMetadata

from .errors import InputError, TraceError
from .module_copy import copy_module


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

    Norms and activations are answered directly (see ``_SAME_SHAPE``): their meta kernels are Python
    decompositions, slower than the real ops on small inputs.
    """

    def __init__(self, gm: torch.fx.GraphModule):
        super().__init__(copy_module(gm, _on_meta), graph=gm.graph)

    def propagate(self, *inputs):
        return self.run(*(_on_meta(t) if isinstance(t, torch.Tensor) else t for t in inputs))

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        check = _SAME_SHAPE.get(type(module))
        if check is not None and len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
            check(module, args[0])
            return torch.empty_like(args[0])
        return super().call_module(target, args, kwargs)


def _on_meta(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to("meta")


def _check_batch_norm(module: torch.nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> None:
    """The checks BatchNorm's kernel makes on shapes: input rank and one statistic per channel."""
    module._check_input_dim(x)
    _check_parameter_shapes(module, ("weight", "bias", "running_mean", "running_var"), (x.shape[1],))
    if module.training and x.numel() == x.shape[1]:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")


def _check_layer_norm(module: torch.nn.LayerNorm, x: torch.Tensor) -> None:
    shape = tuple(module.normalized_shape)
    if tuple(x.shape[x.dim() - len(shape):]) != shape:
        raise RuntimeError(f"LayerNorm normalizes over {shape}, input has shape {tuple(x.shape)}")
    _check_parameter_shapes(module, ("weight", "bias"), shape)


def _check_parameter_shapes(module: torch.nn.Module, names: tuple[str, ...], expected: tuple) -> None:
    for name in names:
        tensor = getattr(module, name, None)
        if tensor is not None and tuple(tensor.shape) != tuple(expected):
            raise RuntimeError(f"{name} of {type(module).__name__} has shape {tuple(tensor.shape)}, "
                               f"expected {tuple(expected)} from its input")


def _no_check(module: torch.nn.Module, x: torch.Tensor) -> None:
    pass


# Module types (exact: a subclass may change forward) whose output has their input's shape.
_SAME_SHAPE = {
    **dict.fromkeys((torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d), _check_batch_norm),
    torch.nn.LayerNorm: _check_layer_norm,
    **dict.fromkeys((torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Hardswish, torch.nn.Hardsigmoid, torch.nn.SiLU,
                     torch.nn.GELU, torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.Dropout, torch.nn.Identity),
                    _no_check),
}


def propagate_shapes(gm: torch.fx.GraphModule, inputs: tuple) -> None:
    """Run ``inputs`` through ``gm`` and store each node's shapes in ``node.meta['tensor_meta']``."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    required = [n.target for n in placeholders if not n.args]  # a placeholder's args hold its default
    if not len(required) <= len(inputs) <= len(placeholders):
        counts = f"{len(required)} to {len(placeholders)}" if len(required) < len(placeholders) else len(required)
        raise InputError(f"data: the model takes {counts} input(s) ({', '.join(n.target for n in placeholders)}) "
                         f"but got {len(inputs)}; "
                         "pass several inputs as a tuple (x, y)")
    try:
        record_shapes(gm, inputs)
    except Exception as error:
        node = getattr(error, "fxprune_node", None)
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs if isinstance(t, torch.Tensor))
        raise InputError(
            f"data: the model rejects inputs of shape {shapes}{f' at node {node}' if node else ''}: "
            f"{type(error).__name__}: {error}. Pass inputs the model accepts{_dtype_hint(inputs)}."
        ) from error


def record_shapes(gm: torch.fx.GraphModule, inputs: tuple) -> None:
    """Store every node's shapes: from a run on ``meta`` tensors when the graph allows, else a real run.

    Only shapes are needed, and a meta run computes them without arithmetic (resnet50, batch 1:
    0.03 s against 0.15 s for a real run). Code that needs values (``.item()``, data-dependent shapes,
    tensors made on the CPU inside ``forward``) fails on meta; the real run then decides, so its
    errors are the ones a user sees.
    """
    with torch.no_grad():
        try:
            MetaShapePropagation(gm).propagate(*inputs)
            return
        except Exception:
            pass
        ShapePropagation(gm).propagate(*inputs)


def _dtype_hint(inputs: tuple) -> str:
    kinds = sorted({str(t.dtype) for t in inputs if isinstance(t, torch.Tensor) and not t.is_floating_point()})
    return f" (the data holds {', '.join(kinds)} values: does the model expect x.float()?)" if kinds else ""


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
