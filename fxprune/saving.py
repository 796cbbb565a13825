"""Save and load a compressed model as data only: its plan (JSON) and its weights, no pickled code.

    fxprune.save(small, "small.fxprune")                          # a folder: plan.json + weights
    small = fxprune.load("small.fxprune", torchvision.models.resnet50())

A pickled GraphModule ties the file to the exact code that made it and runs arbitrary code when
loaded. A plan plus a state dict does neither: ``load`` rebuilds the small architecture by
re-applying the plan to a fresh instance of the original one, then fills in the weights, read with
``weights_only=True`` (or from safetensors, which holds tensors and nothing else).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .choose.plan import Plan
from .compress import apply_plan
from .errors import InputError
from .graph.inputs import tensor_spec

PLAN_FILE = "plan.json"
INPUTS_FILE = "inputs.json"  # shapes and dtypes of the example the plan was traced with
SAFETENSORS_FILE = "weights.safetensors"
TORCH_FILE = "weights.pt"

try:
    import safetensors.torch as safetensors_torch
except ImportError:  # optional: fall back to torch.save of plain tensors
    safetensors_torch = None


def _plain_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each tensor copied on its own: safetensors refuses tensors that share storage."""
    return {name: tensor.detach().cpu().clone().contiguous() for name, tensor in model.state_dict().items()}


def _input_specs(model: torch.nn.Module) -> list[dict]:
    """Shape and dtype of each model input: as compress recorded them, else from the graph (empty if unknown)."""
    recorded = getattr(model, "fxprune_input_specs", None)
    if recorded:
        return recorded
    graph = getattr(model, "graph", None)
    specs = []
    for node in graph.nodes if graph is not None else []:
        meta = node.meta.get("tensor_meta") if node.op == "placeholder" else None
        if meta is not None and hasattr(meta, "shape"):
            specs.append(tensor_spec(meta.shape, meta.dtype))
    return specs


def _recorded_example(folder: Path) -> tuple:
    specs = json.loads((folder / INPUTS_FILE).read_text()) if (folder / INPUTS_FILE).exists() else []
    if not specs:
        raise InputError(f"example: {folder} records no input shapes; pass an example input")
    zeros = [torch.zeros(spec["shape"], dtype=getattr(torch, spec["dtype"])) for spec in specs]
    if any("name" in spec for spec in specs):  # a dict batch: the model's keyword inputs
        return {spec["name"]: tensor for spec, tensor in zip(specs, zeros)}
    return tuple(zeros)


def save(model: torch.nn.Module, path) -> Path:
    """Write ``model.fxprune_plan`` and the model's weights into the folder ``path``; return it."""
    plan = getattr(model, "fxprune_plan", None)
    if not isinstance(plan, Plan):
        raise InputError("model: it has no fxprune_plan; save the model that fxprune.compress returned")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PLAN_FILE).write_text(plan.to_json())
    (folder / INPUTS_FILE).write_text(json.dumps(_input_specs(model)))
    for stale in (SAFETENSORS_FILE, TORCH_FILE):
        (folder / stale).unlink(missing_ok=True)
    if safetensors_torch is not None:
        safetensors_torch.save_file(_plain_state(model), str(folder / SAFETENSORS_FILE))
    else:
        torch.save(_plain_state(model), folder / TORCH_FILE)
    return folder


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / SAFETENSORS_FILE).exists():
        if safetensors_torch is None:
            raise InputError(f"path: {folder} holds safetensors weights; install safetensors to read them")
        return safetensors_torch.load_file(str(folder / SAFETENSORS_FILE))
    if (folder / TORCH_FILE).exists():
        return torch.load(folder / TORCH_FILE, map_location="cpu", weights_only=True)
    raise InputError(f"path: {folder} holds no {SAFETENSORS_FILE} or {TORCH_FILE}")


def load(path, base_model: torch.nn.Module, example=None, *, leaf_modules=()) -> torch.fx.GraphModule:
    """Rebuild a saved compressed model from a fresh ``base_model`` (the original architecture).

    ``example``: an input of the model (only its shapes matter), as for ``fxprune.apply_plan``;
    by default, zeros of the shapes recorded by ``save``. ``base_model`` itself is not modified.
    """
    folder = Path(path)
    if not (folder / PLAN_FILE).exists():
        raise InputError(f"path: {folder} holds no {PLAN_FILE}; pass a folder written by fxprune.save")
    plan = Plan.from_json((folder / PLAN_FILE).read_text())
    example = _recorded_example(folder) if example is None else example
    small = apply_plan(base_model, example, plan, leaf_modules=leaf_modules)
    weights = _read_weights(folder)
    try:
        small.load_state_dict(weights, strict=True)
    except RuntimeError as error:
        raise InputError(f"base_model: the saved weights do not fit the rebuilt model — is it the same "
                         f"architecture the plan was made for? ({str(error).splitlines()[0]})") from error
    return small
