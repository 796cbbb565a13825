"""Capture by ``torch.export``, for models ``torch.fx`` cannot trace (Python control flow, iterating
over traced values, models written for ``torch.compile``).

``torch.export.export(model, inputs, strict=False)`` records the ATen ops a forward runs, with the
parameters read by name (``get_attr`` of ``layer1.0.conv1.weight``): the same parameter names as an
FX trace, so a plan made on one capture applies to the other. The batch dimension is kept free where
the model allows, so that the pruned model runs at any batch size; the exported program's own shape
guards are dropped (fxprune records and checks shapes itself), and the result is a plain
``GraphModule`` that takes and returns what the model does.
"""

from __future__ import annotations

import torch
import torch.fx

from ..errors import TraceError, torch_message


def _batch_free(inputs: tuple):
    """``dynamic_shapes`` that let dim 0 of every tensor input vary (and fix everything else); a batch
    of one would be specialised to 1 anyway (export's 0/1 rule), so it is left fixed."""
    auto = torch.export.Dim.AUTO
    return tuple({0: auto} if isinstance(x, torch.Tensor) and x.dim() > 0 and len(x) > 1 else None for x in inputs)


def _export(model: torch.nn.Module, inputs: tuple) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(model, inputs, dynamic_shapes=_batch_free(inputs), strict=False)
    except Exception:  # a model whose batch size is baked in somewhere: capture it at this one
        return torch.export.export(model, inputs, strict=False)


def export_graph(model: torch.nn.Module, inputs: tuple) -> torch.fx.GraphModule:
    """``model`` captured by ``torch.export`` as a plain GraphModule; ``TraceError`` when it cannot be."""
    try:
        exported = _export(model, tuple(inputs)).module()
    except Exception as error:  # export raises many kinds; all mean "cannot capture"
        raise TraceError(f"torch.export cannot capture {type(model).__name__}: {type(error).__name__}: "
                         f"{torch_message(error)}") from error
    for node in [n for n in exported.graph.nodes if n.op == "call_module" and n.target == "_guards_fn"]:
        exported.graph.erase_node(node)
    gm = torch.fx.GraphModule(exported, exported.graph, type(model).__name__)
    gm._in_spec, gm._out_spec = exported._in_spec, exported._out_spec  # read by the pytree code of forward
    gm.meta["fxprune_capture"] = "export"
    return gm
