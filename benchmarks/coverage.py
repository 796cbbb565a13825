"""Coverage sweep: compress every torchvision model at one ratio and check each result.

For each model: success or the error, parameters and MACs before and after, the oracle's
difference (pruned vs. the original with the removed channels zeroed; where a LayerNorm-like norm
mixes pruned channels, only shape and finiteness are checked), seconds spent tracing, analysing
and rewriting (the criterion's time apart), and the peak memory that compression adds on top of
the model. Each model runs in its own process, so peaks do not leak from one model to the next.

    python benchmarks/coverage.py                       # all classification models, ratio 0.5
    python benchmarks/coverage.py --families classification segmentation video
    python benchmarks/coverage.py resnet50 vit_b_16     # a few by name
    python benchmarks/coverage.py --export              # also export each pruned model to ONNX and
                                                        # compare ONNX Runtime with PyTorch (coverage_export.md)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import markdown_table, write_csv, write_result

FIELDS = ["model", "family", "status", "params_before", "params_after", "params_x", "macs_before", "macs_after",
          "macs_x", "oracle", "oracle_rel_diff", "trace_s", "analyze_rewrite_s", "criterion_s", "peak_mb", "nodes",
          "groups", "frozen_groups", "error"]
EXPORT_FIELDS = ["model", "status", "export", "export_rel_diff", "exporter", "export_s", "error"]


def _memory_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _reset_peak_memory() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: restart the VmHWM (peak RSS) count


def _example(name: str, family: str):
    import torch

    if family == "video":
        return (torch.randn(1, 3, 16, 112, 112),)
    size = 299 if name == "inception_v3" else 224
    return (torch.randn(1, 3, size, size),)


def measure(name: str, family: str, ratio: float, export: bool = False) -> dict:
    """Compress one model in this process and return one row of the table."""
    import torch
    import torchvision

    from fxprune.choose.criteria import get_criterion
    from fxprune.choose.plan import kept_count, plan_from_scores
    from fxprune.graph.measure import count_macs, count_parameters
    from fxprune.pipeline import evaluating, plan_and_rewrite, traced
    from fxprune.rewrite import oracle

    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    kwargs = {"aux_loss": True} if family == "segmentation" else {}
    model = oracle.randomize_weights(torchvision.models.get_model(name, weights=None, **kwargs)).eval()
    inputs = _example(name, family)
    row = {"model": name, "family": family, "params_before": count_parameters(model),
           "macs_before": count_macs(model, inputs)}
    criterion_seconds = []

    def choose(analysis):
        start = time.perf_counter()
        scores = get_criterion("l1")(analysis, None)
        criterion_seconds.append(time.perf_counter() - start)
        return plan_from_scores(analysis, scores, [kept_count(g.size, ratio, 1) for g in analysis.groups])

    baseline = _memory_kb("VmRSS")
    _reset_peak_memory()
    start = time.perf_counter()
    with evaluating(model):
        gm = traced(model, inputs)
        traced_at = time.perf_counter()
        small, analysis, plan = plan_and_rewrite(gm, inputs, choose)
    done = time.perf_counter()
    row["peak_mb"] = round((_memory_kb("VmHWM") - baseline) / 1024, 1)
    row["trace_s"] = round(traced_at - start, 3)
    row["criterion_s"] = round(sum(criterion_seconds), 3)
    row["analyze_rewrite_s"] = round(done - traced_at - row["criterion_s"], 3)
    result = oracle.check(analysis, plan, small, inputs)
    exact_ok = result.exact and result.relative < 1e-4
    row["oracle"] = "exact" if exact_ok else ("shape" if not result.exact else "FAIL")
    row["oracle_rel_diff"] = f"{result.relative:.1e}"
    row.update(params_after=count_parameters(small), macs_after=count_macs(small, inputs), nodes=len(gm.graph.nodes),
               groups=len(analysis.groups), frozen_groups=len(analysis.frozen))
    row["params_x"] = round(row["params_before"] / row["params_after"], 2)
    row["macs_x"] = round(row["macs_before"] / row["macs_after"], 2)
    row["status"] = "ok" if row["oracle"] != "FAIL" else "oracle failed"
    if export:
        row.update(_export_parity(small, inputs))
    return row


def _export_parity(small, inputs) -> dict:
    """Export to ONNX and compare ONNX Runtime's output with PyTorch's (relative to the output scale)."""
    import tempfile

    from fxprune.deploy.export import export_onnx

    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as folder:
            result = export_onnx(small, inputs, f"{folder}/model.onnx", tolerance=float("inf"))
    except Exception as error:  # reported in the table
        return {"export": "FAIL", "error": f"export: {type(error).__name__}: {error}"[:300]}
    return {"export": "ok" if result.relative <= 1e-4 else "mismatch", "export_rel_diff": f"{result.relative:.1e}",
            "exporter": result.exporter, "export_s": round(time.perf_counter() - start, 1)}


def run_isolated(name: str, family: str, ratio: float, timeout: int, export: bool = False) -> dict:
    command = [sys.executable, __file__, "--one", name, "--family", family, "--ratio", str(ratio)]
    command += ["--export"] if export else []
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "family": family, "status": "timeout", "error": f"over {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "family": family, "status": "error", "error": error[:300]}
    return json.loads(lines[-1])


def model_names(families: list[str]) -> list[tuple[str, str]]:
    import torchvision

    modules = {"classification": torchvision.models, "segmentation": torchvision.models.segmentation,
               "video": torchvision.models.video}
    return [(name, family) for family in families for name in torchvision.models.list_models(module=modules[family])]


def write_export_table(rows: list[dict], ratio: float) -> str:
    """``coverage_export.md``: which pruned models export and how closely ONNX Runtime matches PyTorch."""
    done = [r for r in rows if r.get("export") == "ok"]
    others = [r["model"] for r in rows if r.get("export") != "ok"]
    summary = (f"ratio {ratio}: {len(done)} of {len(rows)} pruned models export to ONNX and match PyTorch within "
               f"1e-4 of the output scale" + (f" (largest {max(float(r['export_rel_diff']) for r in done):.1e})"
                                              if done else "") + f"; not: {', '.join(others) or 'none'}.")
    write_result("coverage_export.md", summary + "\n\n" + markdown_table(EXPORT_FIELDS, rows) + "\n")
    return summary


def write_tables(rows: list[dict], ratio: float) -> str:
    write_csv("coverage.csv", FIELDS, rows)
    ok = [r for r in rows if r.get("status") == "ok"]
    summary = [f"ratio {ratio}: {len(ok)} of {len(rows)} models compressed and passed the oracle "
               f"({sum(r['oracle'] == 'exact' for r in ok)} exactly, {sum(r['oracle'] == 'shape' for r in ok)} "
               "by shape where a LayerNorm mixes pruned channels)."]
    if ok:
        summary.append(f"median MACs reduction {statistics.median(r['macs_x'] for r in ok):.2f}x, median parameter "
                       f"reduction {statistics.median(r['params_x'] for r in ok):.2f}x; slowest analysis+rewrite "
                       f"{max(r['analyze_rewrite_s'] for r in ok):.2f} s; largest extra peak memory "
                       f"{max(r['peak_mb'] for r in ok):.0f} MB.")
    shown = ["model", "status", "params_x", "macs_x", "oracle", "oracle_rel_diff", "trace_s", "analyze_rewrite_s",
             "peak_mb", "groups", "error"]
    write_result("coverage.md", "\n\n".join([" ".join(summary), markdown_table(shown, rows)]) + "\n")
    return " ".join(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model names (default: every model of the families)")
    parser.add_argument("--families", nargs="+", default=["classification"])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed per model")
    parser.add_argument("--export", action="store_true", help="also export to ONNX and check ONNX Runtime parity")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--family", default="classification", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        try:
            print(json.dumps(measure(args.one, args.family, args.ratio, args.export)))
        except Exception as error:  # reported as a row, not a crash of the sweep
            print(json.dumps({"model": args.one, "family": args.family, "status": "error",
                              "error": f"{type(error).__name__}: {error}"[:300]}))
        return
    names = model_names(args.families)
    if args.models:
        names = [(n, f) for n, f in names if n in args.models]
    rows = []
    for name, family in names:
        rows.append(run_isolated(name, family, args.ratio, args.timeout, args.export))
        print(json.dumps(rows[-1]), flush=True)
        write_export_table(rows, args.ratio) if args.export else write_tables(rows, args.ratio)
    print(write_export_table(rows, args.ratio) if args.export else write_tables(rows, args.ratio))


if __name__ == "__main__":
    main()
