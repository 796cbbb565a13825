"""Apply a plan: the one module that changes models.

Parameters and buffers are sliced along every dim that lost channels; then each node's rule fixes
what slicing cannot (module attributes such as ``out_channels``, literal sizes in ``view`` calls).
The result is run once on the example input and every node's shape is compared with what the plan
promised; a difference raises ``RewriteError`` naming the nodes, never a silently wrong model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx

from ..analysis.analyze import Analysis
from ..analysis.slots import SlotTable
from ..choose.plan import Plan, kept_slots, removed_components
from ..errors import RewriteError
from ..graph.module_copy import copy_module
from ..graph.shapes import record_shapes, tensor_shapes
from ..graph.tensors import DimRef, canonical_names, output_key, param_name
from ..rules import NodeView, find_rule, shape_shortcuts


class ShrinkContext:
    """What a rule's ``shrink`` may ask: which slots of a space stay, and the new sizes."""

    def __init__(self, table: SlotTable, kept: dict[DimRef, np.ndarray]):
        self.table = table
        self._kept = kept

    def kept(self, ref: DimRef) -> np.ndarray | None:
        """Indices that stay in ``ref``, or None when it keeps all."""
        return self._kept.get(ref)

    def new_size(self, ref: DimRef) -> int:
        kept = self._kept.get(ref)
        return self.table.size[ref] if kept is None else len(kept)

    def new_shape(self, key: str) -> tuple[int, ...]:
        return tuple(self.new_size(DimRef(key, d)) for d in range(len(self.table.shapes[key])))


def _sliced_tensors(gm: torch.fx.GraphModule, ctx: ShrinkContext) -> dict[int, torch.Tensor]:
    """The smaller tensor for each parameter or buffer that loses channels, keyed by ``id`` of the old one.

    Used as the copy's memo, so the copy gets the sliced tensors directly (every alias of a shared
    parameter included) and never holds a full-size copy of the pruned weights.
    """
    replacements = {}
    for key in ctx.table.param_keys:
        shape = ctx.table.shapes[key]
        if ctx.new_shape(key) == shape:
            continue
        name = param_name(key)
        owner, _, attr = name.rpartition(".")
        module = gm.get_submodule(owner)
        old = module._parameters[attr] if attr in module._parameters else module._buffers[attr]
        new = old.detach()
        for dim in range(len(shape)):
            kept = ctx.kept(DimRef(key, dim))
            if kept is not None:
                new = new.index_select(dim, torch.as_tensor(kept, device=new.device))
        if isinstance(old, torch.nn.Parameter):
            new = torch.nn.Parameter(new, requires_grad=old.requires_grad)
        replacements[id(old)] = new
    return replacements


def _copy_graph(graph: torch.fx.Graph) -> torch.fx.Graph:
    copy = torch.fx.Graph()
    copy.output(copy.graph_copy(graph, {}))
    copy.set_codegen(graph._codegen)  # a torch.export capture's forward takes and returns the model's structure
    return copy


def _expected_shapes(gm: torch.fx.GraphModule, ctx: ShrinkContext) -> dict[str, tuple]:
    return {output_key(n, p): ctx.new_shape(output_key(n, p))
            for n in gm.graph.nodes if n.op != "output" for p in tensor_shapes(n)}


def verify_shapes(gm: torch.fx.GraphModule, inputs: tuple, expected: dict[str, tuple]) -> None:
    """Run ``gm`` on ``inputs``; raise ``RewriteError`` naming the first nodes whose shapes differ."""
    for node in gm.graph.nodes:  # stale shapes from the original graph; the run writes them anew
        node.meta.pop("tensor_meta", None)
    try:
        record_shapes(gm, inputs, shape_shortcuts())
    except Exception as error:
        failed = getattr(error, "fxprune_node", None)  # set by ShapePropagation
        raise RewriteError(f"the rewritten graph fails at node {failed or '?'}: {error}",
                           [failed] if failed else []) from error
    wrong = [n.name for n in gm.graph.nodes if n.op != "output"
             for p, shape in tensor_shapes(n).items()
             if output_key(n, p) in expected and tuple(shape) != expected[output_key(n, p)]]
    if wrong:
        raise RewriteError(f"shapes differ from the plan at nodes {', '.join(wrong[:5])}", wrong)


def rewrite(analysis: Analysis, plan: Plan, example_inputs: tuple) -> torch.fx.GraphModule:
    """A new GraphModule with the plan's channels physically removed (``analysis.gm`` is untouched)."""
    ctx = ShrinkContext(analysis.table, kept_slots(analysis, removed_components(analysis, plan)))
    root = copy_module(analysis.gm, torch.Tensor.clone, _sliced_tensors(analysis.gm, ctx))
    graph = _copy_graph(analysis.gm.graph)
    aliases = canonical_names(root)
    for node in list(graph.nodes):
        view = NodeView(node, root, analysis.table, aliases)
        rule = find_rule(view.rule_key)
        if rule is not None and rule.shrink is not None:
            rule.shrink(view, ctx)
    graph.lint()
    gm = torch.fx.GraphModule(root, graph, analysis.gm.__class__.__name__)  # compiles the code once
    verify_shapes(gm, example_inputs, _expected_shapes(gm, ctx))
    return gm
