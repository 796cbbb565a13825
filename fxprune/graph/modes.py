"""Models whose graph depends on training mode: GoogLeNet's and Inception v3's auxiliary heads.

``symbolic_trace`` bakes ``self.training`` into the graph, so a graph traced in eval mode has no
auxiliary heads and one traced in training mode returns them too. fxprune analyses the training
graph (a superset: the heads' layers are pruned along with the trunk), then puts the pruned layers
back into a copy of the user's own model class, whose ``forward`` still chooses per mode. That is
possible when the rewrite only changed layers (no sizes written in the graph's code); otherwise
the eval graph is compressed alone and the result lists the modules it dropped.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
import torch.fx

from ..errors import InputError
from .capture import trace
from .module_copy import with_own_buffers
from .outputs import compare
from .shapes import ShapeShortcuts, propagate_shapes


def _structure(graph: torch.fx.Graph) -> list[tuple]:
    return [(n.op, str(n.target), repr(n.args), repr(n.kwargs)) for n in graph.nodes]


def _layers(graph: torch.fx.Graph) -> set[str]:
    """Submodules and parameters a graph uses (FX's own ``_tensor_constant`` copies aside)."""
    return {str(n.target) for n in graph.nodes if n.op == "call_module"
            or (n.op == "get_attr" and not str(n.target).startswith("_tensor_constant"))}


def _reads_training_flag(model: torch.nn.Module) -> bool:
    """Whether any traced code (methods of classes outside ``torch.nn``) reads a ``.training`` flag.

    Only such code can trace differently per mode, so the second trace is skipped for the rest.
    """
    seen: set[type] = set()
    for module in model.modules():
        for cls in type(module).__mro__:
            if cls in seen or cls.__module__.startswith("torch.nn") or cls is object:
                continue
            seen.add(cls)
            if any("training" in getattr(getattr(f, "__code__", None), "co_names", ()) for f in vars(cls).values()):
                return True
    return False


@contextlib.contextmanager
def _buffers_restored(model: torch.nn.Module):
    """Every buffer of ``model`` as it was before the body: the same tensor, with the same values."""
    saved = [(module, name, buffer, buffer._version, buffer.clone())
             for module in model.modules() for name, buffer in module._buffers.items() if buffer is not None]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, name, buffer, version, value in saved:
                module._buffers[name] = buffer
                if buffer._version != version:
                    buffer.copy_(value)


def training_graph(model: torch.nn.Module, eval_gm: torch.fx.GraphModule, inputs: tuple,
                   leaf_modules=(), shortcuts: ShapeShortcuts | None = None) -> torch.fx.GraphModule | None:
    """The graph traced in training mode, with shapes, when it uses layers ``eval_gm`` does not; else None.

    A graph that differs only in flags (``stochastic_depth(..., training=True)``) needs nothing
    more: the layers are the same, and the result follows the mode it is put in.

    Expects the model's modules in eval mode and leaves them so, with every buffer as it was: the
    trace runs the model's Python code, which may count batches (timm's ``BatchNormAct2d``). The
    graph holds copies of the buffers, since running it updates BatchNorm statistics.
    """
    if not _reads_training_flag(model):
        return None
    model.train()
    try:
        with _buffers_restored(model):
            train_gm = trace(model, tuple(leaf_modules))
    except Exception:  # a model that traces only in eval mode is compressed in eval mode
        return None
    finally:
        model.eval()
    if not _layers(train_gm.graph) - _layers(eval_gm.graph):
        return None
    train_gm = torch.fx.GraphModule(with_own_buffers(train_gm), train_gm.graph, type(train_gm).__name__)
    try:
        propagate_shapes(train_gm, inputs, shortcuts)
    except InputError as error:
        warnings.warn(f"{type(model).__name__}: its training-mode graph rejects these inputs ({error}); "
                      f"modules used only in training mode are dropped: "
                      f"{', '.join(dropped_modules(model, eval_gm))}", stacklevel=3)
        return None
    return train_gm


def dropped_modules(model: torch.nn.Module, gm: torch.fx.GraphModule) -> list[str]:
    """Submodules with parameters that ``gm`` never uses (used only in the other mode)."""
    used = {n.target for n in gm.graph.nodes if n.op in ("call_module", "get_attr")}
    names = []
    for name, module in model.named_children():
        if any(p.numel() for p in module.parameters()) and not any(u == name or u.startswith(name + ".") for u in used):
            names.append(name)
    return names


def rehost(model: torch.nn.Module, pruned: torch.fx.GraphModule, original: torch.fx.GraphModule,
           inputs: tuple) -> torch.nn.Module | None:
    """A copy of ``model`` carrying ``pruned``'s layers, or None when that would not be the same model."""
    if _structure(pruned.graph) != _structure(original.graph):
        return None
    host = copy.deepcopy(model).eval()
    for node in pruned.graph.nodes:
        if node.op not in ("call_module", "get_attr"):
            continue
        owner, _, name = node.target.rpartition(".")
        value = pruned.get_submodule(node.target) if node.op == "call_module" else getattr(
            pruned.get_submodule(owner), name)
        setattr(host.get_submodule(owner), name, value)
    try:
        with torch.no_grad():
            want = pruned(*inputs)
        want = want[0] if isinstance(want, tuple) else want
        difference, scale = compare(host, lambda *x: want, inputs)
    except Exception:
        return None
    return host if difference <= 1e-4 * max(scale, 1e-12) else None
