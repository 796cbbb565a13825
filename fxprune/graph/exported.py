"""Capture by ``torch.export``, for models ``torch.fx`` cannot trace (Python control flow, iterating
over traced values, models written for ``torch.compile``).

``torch.export.export(model, inputs, strict=False)`` records the ATen ops a forward runs, with the
parameters read by name (``get_attr`` of ``layer1.0.conv1.weight``): the same parameter names as an
FX trace, so a plan made on one capture applies to the other. The batch dimension is kept free where
the model allows, so that the pruned model runs at any batch size; the exported program's own shape
guards are dropped (fxprune records and checks shapes itself), and the result is a plain
``GraphModule`` that returns what the model does (a ``ModelOutput``, a dict, a tuple: the exported
program's output spec rebuilds it).

Keyword inputs (a dict batch, ``graph.inputs.Inputs``) are passed to export as keywords. The graph
takes its inputs positionally (placeholders in order: positional arguments, then keyword ones), as
every stage runs it, and its ``forward`` names them as the model does, so that the pruned model takes
the same dict (``small(**batch)``) or the same values in order. Integer inputs (token ids, masks) keep
every dim free, not only the batch: the pruned model runs at another sequence length. A dict batch of
one row is captured at two copies of it, so that its batch dimension stays free too.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.fx
import torch.fx.graph
import torch.utils._pytree as pytree

from ..errors import InputError, TraceError, torch_message
from .inputs import keywords_of


def _free_dims(x):
    """Dim 0 of a tensor free (a batch of one would be specialised to 1 anyway: export's 0/1 rule), and
    every dim of an integer tensor (token ids: the sequence length too); the rest fixed."""
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        return None
    auto = torch.export.Dim.AUTO
    if not x.is_floating_point() and not x.is_complex():
        return dict.fromkeys(range(x.dim()), auto)
    return {0: auto} if len(x) > 1 else None


def _split(model: torch.nn.Module, inputs: tuple) -> tuple[tuple, dict, object]:
    """Positional and keyword arguments, and ``dynamic_shapes`` for them (keyed by forward's names
    when some are keywords, as export asks)."""
    keywords = keywords_of(inputs)
    split = len(inputs) - len(keywords)
    args, kwargs = tuple(inputs[:split]), dict(zip(keywords, inputs[split:]))
    if not keywords:
        return args, kwargs, tuple(_free_dims(x) for x in args)
    if all(t.dim() and len(t) == 1 for t in inputs if isinstance(t, torch.Tensor)):
        # one row (apply_plan, load): export would specialise the batch to 1 and bake it into every
        # reshape a transformer makes; two copies of the row keep it free
        args, kwargs = pytree.tree_map_only(torch.Tensor, lambda t: torch.cat([t, t]), (args, kwargs))
    try:
        bound = inspect.signature(model.forward).bind_partial(*args, **kwargs).arguments
    except TypeError as error:
        names = ", ".join(inspect.signature(model.forward).parameters)
        raise InputError(f"data: the dict batch does not fit {type(model).__name__}.forward ({error}); its "
                         f"arguments are {names}") from None
    return args, kwargs, {name: pytree.tree_map(_free_dims, value) for name, value in bound.items()}


def _doubled(inputs: tuple) -> tuple:
    return tuple(torch.cat([t, t]) if isinstance(t, torch.Tensor) and t.dim() else t for t in inputs)


@contextlib.contextmanager
def _without_cache(model: torch.nn.Module):
    """A model whose config asks for a key/value cache (Hugging Face's ``use_cache``, on by default for
    causal LMs) captured without it: the cache is a copy of every layer's keys and values kept for
    generation, which as an output of the graph would freeze every head width (and export cannot
    flatten its type). The pruned model returns the logits, without a cache."""
    config = getattr(model, "config", None)
    if getattr(config, "use_cache", None) is not True:
        yield
        return
    config.use_cache = False
    try:
        yield
    finally:
        config.use_cache = True


def _export(model: torch.nn.Module, inputs: tuple) -> torch.export.ExportedProgram:
    args, kwargs, dynamic = _split(model, inputs)
    with _without_cache(model):
        try:
            return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic, strict=False)
        except Exception:  # a model whose batch size is baked in somewhere: capture it at this one
            return torch.export.export(model, args, kwargs, strict=False)


def _positional(gm: torch.fx.GraphModule) -> None:
    """Let ``gm`` take its placeholders in order, by position or by name (its ``forward``'s parameters
    are the model's argument names): stages run it positionally, users call it with their dict."""
    codegen = gm.graph._codegen
    if not isinstance(codegen, torch.fx.graph._PyTreeCodeGen):
        return
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    spec = pytree.tree_structure((tuple(names), {}))
    codegen.pytree_info = codegen.pytree_info._replace(orig_args=names, in_spec=spec)
    gm._in_spec = spec
    gm.recompile()


# Higher-order ops export wraps regions in (``with torch.autocast(enabled=False)``, ``torch.no_grad()``
# inside a forward): the position of the body submodule among their arguments; the operands follow.
_WRAPPERS = {"WrapWithAutocast": 4, "WrapWithSetGradEnabled": 1}


def _inline_wrappers(gm: torch.fx.GraphModule) -> None:
    """Inline every autocast or grad-mode region into the graph, so that each op in it meets its rule
    (a region is otherwise one opaque node, and its nested graph does not survive the copies a
    rewrite makes). The region's mode is dropped: the ops run as the caller's mode has them, which
    for a float32 model in inference computes the same."""
    bodies = set()
    while True:
        regions = [n for n in gm.graph.nodes if n.op == "call_function" and type(n.target).__name__ in _WRAPPERS]
        if not regions:
            break
        for node in regions:
            at = _WRAPPERS[type(node.target).__name__]
            name = node.args[at].target
            body = getattr(gm, name)
            bodies.add(name)
            env = dict(zip([b for b in body.graph.nodes if b.op == "placeholder"], node.args[at + 1:]))
            result = ()
            with gm.graph.inserting_before(node):
                for inner in body.graph.nodes:
                    if inner.op == "placeholder":
                        continue
                    if inner.op == "output":
                        result = torch.fx.node.map_arg(inner.args[0], env.__getitem__)
                        break
                    if inner.op == "get_attr":
                        copied = f"{name}_{inner.target}".replace(".", "_")
                        setattr(gm, copied, getattr(body, inner.target))
                        env[inner] = gm.graph.get_attr(copied)
                    else:
                        env[inner] = gm.graph.node_copy(inner, env.__getitem__)
            for user in list(node.users):
                user.replace_all_uses_with(result[user.args[1]])
                gm.graph.erase_node(user)
            gm.graph.erase_node(node)
    gm.graph.eliminate_dead_code()  # the get_attr nodes of the bodies
    for name in bodies - {n.target for n in gm.graph.nodes if n.op == "get_attr"}:  # one may serve several regions
        delattr(gm, name)
    gm.graph.lint()
    gm.recompile()


def _plain(program: torch.export.ExportedProgram, model: torch.nn.Module, keywords: bool) -> torch.fx.GraphModule:
    """The exported program as a GraphModule without its shape guards (fxprune checks shapes itself)."""
    exported = program.module()
    for node in [n for n in exported.graph.nodes if n.op == "call_module" and n.target == "_guards_fn"]:
        exported.graph.erase_node(node)
    gm = torch.fx.GraphModule(exported, exported.graph, type(model).__name__)
    gm._in_spec, gm._out_spec = exported._in_spec, exported._out_spec  # read by the pytree code of forward
    _inline_wrappers(gm)
    if keywords:
        _positional(gm)
    gm.meta["fxprune_capture"] = "export"
    return gm


def _runs_on_one_row(gm: torch.fx.GraphModule, inputs: tuple) -> bool:
    row = tuple(t[:1] if isinstance(t, torch.Tensor) and t.dim() else t for t in inputs)
    try:
        with torch.no_grad():
            gm(*row)
    except Exception:  # any failure means the batch size is baked in
        return False
    return True


def export_graph(model: torch.nn.Module, inputs: tuple) -> torch.fx.GraphModule:
    """``model`` captured by ``torch.export`` as a plain GraphModule; ``TraceError`` when it cannot be."""
    keywords = bool(keywords_of(inputs))
    inputs = inputs if keywords else tuple(inputs)
    try:
        gm = _plain(_export(model, inputs), model, keywords)
    except InputError:
        raise
    except Exception as error:  # export raises many kinds; all mean "cannot capture"
        raise TraceError(f"torch.export cannot capture {type(model).__name__}: {type(error).__name__}: "
                         f"{torch_message(error)}") from error
    batched = any(isinstance(t, torch.Tensor) and t.dim() and len(t) > 1 for t in inputs)
    if keywords or not batched or _runs_on_one_row(gm, inputs):
        return gm
    # state the model cached at the batch size it last ran (a detect head's anchors, under ``if self.shape
    # != shape``) pins the batch to that size; at twice the batch the comparison fails, the cache is
    # rebuilt from symbolic sizes and the batch stays free
    try:
        retry = _plain(_export(model, _doubled(inputs)), model, keywords)
    except Exception:  # keep the capture that worked, at its batch size
        return gm
    return retry if _runs_on_one_row(retry, inputs) else gm
