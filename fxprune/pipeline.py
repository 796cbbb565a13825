"""The pipeline, stage by stage, for those who want to look between the stages.

    with evaluating(model):
        gm = traced(model, (x,))                                   # 1. capture, with shapes
        analysis = analyze_graph(gm)                               # 2. coupled channel groups
        plan = plan_from_scores(analysis, l1(analysis, None), [g.size // 2 for g in analysis.groups])  # 3.
        small = rewrite(analysis, plan, (x,))                      # 4. physically smaller

``plan_and_rewrite`` runs 2-4 with the retry ``compress`` uses; ``fxprune.compress`` adds data
handling, criteria, training-mode graphs and the checks of its arguments.
"""

from __future__ import annotations

import contextlib

import torch
import torch.fx

from .analysis.analyze import Analysis, analyze_graph
from .choose.plan import Plan
from .errors import RewriteError
from .graph.capture import capture_graph
from .graph.shapes import check_batch_dims, propagate_shapes, tensor_shapes
from .graph.tensors import DimRef, output_key
from .rewrite.apply import rewrite
from .rules import fuse_written_out, shape_shortcuts

MAX_ROUNDS = 32  # each failed round freezes the sizes behind one shape check; a deep model may hold many


@contextlib.contextmanager
def evaluating(model: torch.nn.Module):
    """Put every module in eval mode for the duration, then restore each one's own flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def traced(model: torch.nn.Module, inputs: tuple, leaf_modules=(), concrete_args=None,
           given: tuple | None = None, capture: str = "auto") -> torch.fx.GraphModule:
    """Stage 1: the model as a GraphModule whose nodes carry the shapes ``inputs`` give them.

    ``concrete_args``: values of forward's arguments fixed while tracing (see ``graph.capture.trace``).
    ``capture``: ``"auto"``, ``"fx"`` or ``"export"`` (see ``graph.capture``).
    ``given``: the tensors the caller passed, when ``inputs`` are their first rows (errors name their shapes).
    """
    gm = capture_graph(model, given if given is not None else inputs, capture, tuple(leaf_modules), concrete_args)
    check_batch_dims(gm, given if given is not None else inputs)
    propagate_shapes(gm, inputs, shape_shortcuts())
    fuse_written_out(gm)  # RMSNorm written out as five nodes -> one, whose rule lets the hidden size be pruned
    return gm


def _size_sources(node: torch.fx.Node, depth: int = 6) -> list[torch.fx.Node]:
    """The tensors whose sizes a non-tensor value is computed from (``x.shape[2] // 3``: ``x``)."""
    if depth == 0:
        return []
    found = []
    for source in node.all_input_nodes:
        found.extend([source] if tensor_shapes(source) else _size_sources(source, depth - 1))
    return found


def _freeze_nodes(gm: torch.fx.GraphModule, names: list[str], why: str) -> dict[DimRef, str]:
    """Freeze every dim of the named nodes, of their tensor inputs, and of the tensors whose sizes their
    other inputs are computed from (after a failed shape check)."""

    frozen = {}
    nodes = {n.name: n for n in gm.graph.nodes}
    for name in names:
        node = nodes.get(name)
        if node is None:
            continue
        around = [node]
        for source in node.all_input_nodes:
            around.extend([source] if tensor_shapes(source) else _size_sources(source))
        for n in around:
            for path, shape in tensor_shapes(n).items():
                for dim in range(len(shape)):
                    frozen[DimRef(output_key(n, path), dim)] = why
    return frozen


def plan_and_rewrite(gm, inputs, choose_plan, ignore=()) -> tuple[torch.fx.GraphModule, Analysis, Plan]:
    """Stages 2-4: analyze, let ``choose_plan(analysis)`` pick channels, rewrite; freeze and retry on a
    shape mismatch (sizes the graph computes at run time from a pruned dim)."""
    frozen: dict[DimRef, str] = {}
    for _ in range(MAX_ROUNDS):
        analysis = analyze_graph(gm, ignore, frozen)
        plan = choose_plan(analysis)
        try:
            return rewrite(analysis, plan, inputs), analysis, plan
        except RewriteError as error:
            if not error.nodes:
                raise
            frozen.update(_freeze_nodes(gm, error.nodes, f"sizes computed at run time at node {error.nodes[0]}"))
    raise RewriteError("could not find a consistent plan; please report this model")
