"""ONNX export with a parity check against ONNX Runtime. The only module that imports onnx/onnxruntime.

    result = export_onnx(small, (torch.randn(1, 3, 224, 224),), "small.onnx")
    print(result)   # small.onnx: max |ORT - PyTorch| = 2.1e-07 (relative 1.3e-07, tolerance 1e-04)

An exported file is only useful if ONNX Runtime computes what PyTorch computed, so every export is
checked with ``onnx.checker`` and then run on the example: a difference beyond ``tolerance``
(relative to the largest output magnitude) raises ``ExportError`` instead of leaving a wrong file
behind silently.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from ..errors import FxpruneError, InputError, torch_message
from ..graph.outputs import flat_outputs

TOLERANCE = 1e-4
OPSET = 18


class ExportError(FxpruneError):
    """The model could not be exported, or ONNX Runtime disagrees with PyTorch on the example."""


@dataclass
class ExportResult:
    """What ``export_onnx`` returns: the file, and how far ONNX Runtime's outputs were from PyTorch's."""

    path: str
    max_abs_diff: float
    output_scale: float
    tolerance: float
    exporter: str  # "torchscript" or "dynamo"

    @property
    def relative(self) -> float:
        return self.max_abs_diff / max(self.output_scale, 1e-12)

    def __str__(self) -> str:
        return (f"{self.path}: max |ORT - PyTorch| = {self.max_abs_diff:.1e} (relative {self.relative:.1e}, "
                f"tolerance {self.tolerance:.0e}, {self.exporter} exporter)")


def session(path, threads: int | None = None, provider: str = "CPUExecutionProvider", profile: str | None = None,
            optimized_path: str | None = None):
    """An ONNX Runtime session with denormals flushed to zero.

    Random or freshly pruned weights produce denormal floats that slow a CPU several-fold; flushing
    them makes timings measure the model, not the denormals. ``profile``: a file prefix for ORT's
    per-op profiler (``session.end_profiling()`` returns the JSON file it wrote); ``optimized_path``:
    where to write the graph ORT actually runs (after fusions), whose node names the profile uses.
    """
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.log_severity_level = 3  # errors only: the optimized-model dump warns on every profile
    # Idle intra-op threads spin by default; with several sessions timed in turn (or a busy machine),
    # the spinning ones steal the cores of the one running, and the timings measure that instead.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    return onnxruntime.InferenceSession(str(path), options, providers=[provider])


def available_providers() -> list[str]:
    return onnxruntime.get_available_providers()


def run_session(sess, inputs: tuple) -> list[np.ndarray]:
    feed = {arg.name: t.detach().cpu().numpy() for arg, t in zip(sess.get_inputs(), inputs)}
    return sess.run(None, feed)


def _names(example: tuple, outputs: list) -> tuple[list[str], list[str]]:
    inputs = ["input"] if len(example) == 1 else [f"input_{i}" for i in range(len(example))]
    results = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    return inputs, results


def _torchscript_export(model, example, path, dynamic_batch, names) -> None:
    """The TorchScript-based exporter: fast, and handles every traced torchvision family we sweep."""
    inputs, outputs = names
    axes = {name: {0: "batch"} for name in inputs + outputs} if dynamic_batch else None
    torch.onnx.export(model, example, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                      dynamic_axes=axes, opset_version=OPSET)


def _dynamo_export(model, example, path, dynamic_batch, names) -> None:
    """torch.export-based exporter: handles ops the TorchScript one cannot (adaptive pools of any size)."""
    inputs, outputs = names
    shapes = tuple({0: torch.export.Dim.AUTO} for _ in example) if dynamic_batch else None
    program = torch.onnx.export(model, example, dynamic_shapes=shapes, input_names=inputs,
                                output_names=outputs, dynamo=True, external_data=False)
    program.save(str(path))


EXPORTERS = {"torchscript": _torchscript_export, "dynamo": _dynamo_export}


@contextlib.contextmanager
def _quiet():
    """Exporters print progress and, on failure, the whole IR (some from C++): send all of it nowhere."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as null, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        os.dup2(null.fileno(), 1), os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def _export_quietly(exporter, *args) -> None:
    with _quiet():
        EXPORTERS[exporter](*args)


def _export_first_working(model, example, path, dynamic_batch, names, exporters) -> str:
    errors = []
    for exporter in exporters:
        try:
            _export_quietly(exporter, model, example, path, dynamic_batch, names)
            onnx.checker.check_model(str(path))
            return exporter
        except Exception as error:  # noqa: BLE001 — every exporter failure is reported together below
            first_line = str(error).splitlines()[0][:300] if str(error) else ""
            errors.append(f"{exporter}: {type(error).__name__}: {first_line}")
    raise ExportError("ONNX export failed with every exporter:\n  " + "\n  ".join(errors))


def check_parity(path, model, example: tuple, tolerance: float = TOLERANCE, exporter: str = "") -> ExportResult:
    """Run the ONNX file and the PyTorch model on ``example``; raise if they differ beyond ``tolerance``."""
    with torch.no_grad():
        want = [t.detach().cpu().numpy() for t in flat_outputs(model(*example))]
    got = run_session(session(path), example)
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        raise ExportError(f"{path}: ONNX Runtime output shapes {[g.shape for g in got]} differ from "
                          f"PyTorch's {[w.shape for w in want]}")
    diff = max(float(np.abs(g.astype(np.float64) - w).max()) for g, w in zip(got, want))
    scale = max(float(np.abs(w).max()) for w in want)
    result = ExportResult(str(path), diff, scale, tolerance, exporter)
    if not result.relative <= tolerance:
        raise ExportError(f"{result}: ONNX Runtime disagrees with PyTorch beyond the tolerance")
    return result


def _shapes(values: tuple) -> str:
    return ", ".join(str(tuple(v.shape)) if isinstance(v, torch.Tensor) else repr(v) for v in values)


def _outputs_on_example(model: torch.nn.Module, example: tuple) -> list:
    """The model's outputs on ``example``; ``InputError`` naming the shapes it was compressed with when it fails."""
    try:
        with torch.no_grad():
            return flat_outputs(model(*example))
    except Exception as error:  # noqa: BLE001 — whatever the model raises, the example is at fault
        specs = getattr(model, "fxprune_input_specs", None)
        seen = ", ".join(f"{tuple(s['shape'])} {s['dtype']}" for s in specs or [])
        advice = (f"it expects {seen}, the shapes compress saw (any batch size): pass an example of that shape"
                  if seen else "pass an example of the shape the model expects")
        reason = (torch_message(error).splitlines() or [""])[0][:300]
        raise InputError(f"example: the model rejects inputs of shape {_shapes(example)} ({type(error).__name__}: "
                         f"{reason}); {advice}") from error


def export_onnx(model: torch.nn.Module, example, path, *, dynamic_batch: bool = True,
                tolerance: float = TOLERANCE, exporter: str = "auto") -> ExportResult:
    """Export ``model`` to ``path``, validate it, and check ONNX Runtime matches PyTorch on ``example``.

    ``example``: a tensor or a tuple of the model's positional inputs. ``exporter``: "torchscript",
    "dynamo", or "auto" (TorchScript first — seconds rather than tens of seconds, and it handles the
    traced GraphModules fxprune produces — then torch.export when it fails).

    Returns an ``ExportResult`` (not the difference alone): ``path``, ``max_abs_diff`` (the largest
    difference between ONNX Runtime and PyTorch), ``output_scale``, ``relative``, ``tolerance`` and
    the ``exporter`` used; printing it gives the line in the module docstring. Raises ``ExportError``
    when no exporter succeeds or the difference exceeds ``tolerance``, and ``InputError`` when the
    model rejects ``example``.
    """
    example = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if exporter != "auto" and exporter not in EXPORTERS:
        raise ExportError(f"exporter: expected 'auto' or one of {sorted(EXPORTERS)}, got {exporter!r}")
    order = list(EXPORTERS) if exporter == "auto" else [exporter]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    training = model.training
    model.eval()
    try:
        names = _names(example, _outputs_on_example(model, example))
        used = _export_first_working(model, example, path, dynamic_batch, names, order)
        return check_parity(path, model, example, tolerance, used)
    finally:
        model.train(training)


def runtime_version() -> str:
    return onnxruntime.__version__


def _op_kinds(path) -> dict[str, str]:
    """Node name → a readable kind; convolutions split into depthwise/grouped, 1×1 and spatial."""
    kinds = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        kind = node.op_type
        if node.op_type == "Conv":
            kernel = list(attributes.get("kernel_shape", []))
            kind = ("Conv depthwise/grouped" if attributes.get("group", 1) > 1
                    else "Conv 1x1" if kernel and all(k == 1 for k in kernel) else "Conv spatial")
        kinds[node.name] = kind
    return kinds


def profile_ops(path, example: tuple, threads: int | None = None, runs: int = 5) -> dict[str, float]:
    """Milliseconds per run that ONNX Runtime spends in each kind of op, from its own profiler.

    Ops are classified on the graph ORT runs after its own rewrites (fused activations, blocked
    NCHWc layouts with their ``ReorderInput``/``ReorderOutput`` nodes), whose names the profile uses.
    """
    import json
    import tempfile
    from collections import defaultdict

    with tempfile.TemporaryDirectory() as folder:
        optimized = str(Path(folder) / "optimized.onnx")
        sess = session(path, threads, profile=str(Path(folder) / "ort"), optimized_path=optimized)
        kinds = _op_kinds(optimized)
        run_session(sess, example)  # warm-up; its events are dropped below by run index
        for _ in range(runs):
            run_session(sess, example)
        events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    model_runs = [e for e in events if e.get("name") == "model_run"]
    start = model_runs[1]["ts"] if len(model_runs) > 1 else 0
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= start:
            node = event["name"].removesuffix("_kernel_time")
            op = event.get("args", {}).get("op_name", "?")
            totals[kinds.get(node, op if op != "Conv" else "Conv (fused)")] += event["dur"] / 1000 / runs
    return dict(totals)
