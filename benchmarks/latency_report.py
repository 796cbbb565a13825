"""Write the latency benchmark's rows as CSV, a markdown summary and a PNG plot.

One row per (model, method, ratio, runtime, batch). ``speedup`` is the original's latency over the
pruned model's, measured side by side; ``efficiency`` is speedup ÷ MACs reduction factor — the
share of the theoretical saving the deployed model really gets (1.0 = all of it). Rows of method
``fxprune-latency`` are the latency-aware plan at the uniform plan's MACs; ``allocation_table`` puts
the two side by side, with how many groups each plan prunes hard (keeps at most a quarter of).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from harness import markdown_table

FIELDS = ["model", "method", "ratio", "macs", "macs_factor", "params", "runtime", "batch", "latency_ms",
          "speedup", "efficiency", "runs", "floor_groups", "same_widths"]
FLOOR_RUNTIME, FLOOR_RATIO = "ort-cpu", 0.5


def _find(rows, **where):
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def _cell(rows, **where) -> str:
    found = _find(rows, **where)
    return f"{found[0]['speedup']:.2f}× ({found[0]['efficiency']:.2f})" if found else "—"


def _runtime_table(rows, runtime, batches) -> list[str]:
    columns = ["model", "ratio", "MACs factor", *(column for b in batches for column in (
        f"b{b} original ms", f"b{b} pruned ms", f"b{b} speedup (÷MACs)"))]
    table = []
    for row in _find(rows, method="fxprune", runtime=runtime, batch=batches[0]):
        cells = [row["model"], f"{row['ratio']:.2f}", f"{row['macs_factor']:.2f}"]
        for batch in batches:
            pruned = _find(rows, method="fxprune", runtime=runtime, batch=batch, model=row["model"],
                           ratio=row["ratio"])
            original = _find(rows, method="original", runtime=runtime, batch=batch, model=row["model"])
            cells += [f"{original[0]['latency_ms']:.1f}" if original else "—",
                      f"{pruned[0]['latency_ms']:.1f}" if pruned else "—",
                      _cell(rows, method="fxprune", runtime=runtime, batch=batch, model=row["model"],
                            ratio=row["ratio"])]
        table.append(cells)
    return [f"### {runtime}", "", markdown_table(columns, table), ""]


PLANS = {"fxprune": "uniform plan", "fxprune-latency": "latency-aware plan"}
COLUMN_NAMES = {"fxprune": "fxprune", "fxprune-latency": "fxprune latency-aware"}


def floor_summary(rows, batches) -> list[str]:
    """The issue's floors for each fxprune plan that ran: ORT CPU at ratio 0.5, and no pruned model
    slower than its original."""
    lines = ["### Floors", ""]
    for method, plan in PLANS.items():
        for batch in batches:
            found = _find(rows, method=method, runtime=FLOOR_RUNTIME, batch=batch, ratio=FLOOR_RATIO)
            if found:
                worst = min(found, key=lambda r: r["efficiency"])
                lines.append(f"* {plan}, {FLOOR_RUNTIME}, ratio {FLOOR_RATIO}, batch {batch}: median speedup ÷ MACs "
                             f"{statistics.median(r['efficiency'] for r in found):.2f} over {len(found)} models; "
                             f"lowest {worst['efficiency']:.2f} ({worst['model']})")
    slower = [r for r in rows if r["method"] in PLANS and r["speedup"] < 1.0]
    lines.append("* pruned models slower than their original: " + (", ".join(
        f"{r['model']} {PLANS[r['method']]} ratio {r['ratio']} {r['runtime']} b{r['batch']} ({r['speedup']:.2f}×)"
        for r in slower) or "none"))
    return lines + [""]


def _side_by_side(rows, batches, other: str, leading, ours=("fxprune",)) -> list[list[str]]:
    """Table rows for each model and ratio that ``other`` ran: the cells ``leading(its row, fxprune's
    uniform row or None)``, then for each batch the cells of the methods ``ours`` beside ``other``'s."""
    table = []
    for row in _find(rows, method=other, runtime=FLOOR_RUNTIME, batch=batches[0]):
        where = dict(runtime=FLOOR_RUNTIME, model=row["model"], ratio=row["ratio"])
        uniform = _find(rows, method="fxprune", batch=batches[0], **where)
        cells = [row["model"], f"{row['ratio']:.2f}", *leading(row, uniform[0] if uniform else None)]
        for batch in batches:
            cells += [_cell(rows, method=method, batch=batch, **where) for method in (*ours, other)]
        table.append(cells)
    return table


def peer_table(rows, batches) -> list[str]:
    """fxprune's plans beside Torch-Pruning pruned to the same MACs: speedup and speedup ÷ MACs factor."""
    if not _find(rows, method="torch-pruning", runtime=FLOOR_RUNTIME):
        return []
    ours = [m for m in PLANS if _find(rows, method=m, runtime=FLOOR_RUNTIME)]
    columns = ["model", "ratio", "MACs factor fxprune / TP", "TP widths = fxprune's",
               *(column for b in batches for column in (*(f"b{b} {COLUMN_NAMES[m]}" for m in ours), f"b{b} TP"))]
    table = _side_by_side(rows, batches, "torch-pruning", lambda peer, uniform: [
        f"{uniform['macs_factor']:.2f} / {peer['macs_factor']:.2f}" if uniform else "—", peer["same_widths"]], ours)
    lines = [f"### fxprune vs Torch-Pruning 1.6.1 at the same MACs ({FLOOR_RUNTIME})", "",
             markdown_table(columns, table)]
    return lines + [line for method in ours for batch in batches for line in _peer_summary(rows, method, batch)] + [""]


def _peer_summary(rows, method, batch) -> list[str]:
    """How often ``method`` is at least as fast as Torch-Pruning, and how many of the misses time one
    architecture twice (both have the uniform plan's exact shapes), where the gap is noise."""
    pairs = [(mine, peer) for peer in _find(rows, method="torch-pruning", runtime=FLOOR_RUNTIME, batch=batch)
             for mine in _find(rows, method=method, runtime=FLOOR_RUNTIME, batch=batch, model=peer["model"],
                               ratio=peer["ratio"])]
    if not pairs:
        return []
    behind = [(mine, peer) for mine, peer in pairs if mine["speedup"] < peer["speedup"]]
    twins = sum(peer["same_widths"] == "yes" and mine["same_widths"] in ("", "yes") for mine, peer in behind)
    twins_note = f" (behind with TP's exact widths, one architecture timed twice: {twins})" if twins else ""
    ratio = statistics.median(mine["speedup"] / peer["speedup"] for mine, peer in pairs)
    return [f"* {COLUMN_NAMES[method]}, batch {batch}: as fast as TP or faster in {len(pairs) - len(behind)} of "
            f"{len(pairs)}{twins_note}; median speedup ratio fxprune / TP {ratio:.2f}"]


def allocation_table(rows, batches) -> list[str]:
    """Uniform vs latency-aware plan at (nearly) the same MACs: speedup and speedup ÷ MACs factor."""
    aware = _find(rows, method="fxprune-latency", runtime=FLOOR_RUNTIME)
    if not aware:
        return []
    columns = ["model", "ratio", "MACs factor uniform / latency", "groups keeping ≤25% uniform / latency",
               "same widths", *(column for b in batches for column in (f"b{b} uniform", f"b{b} latency-aware"))]
    table = _side_by_side(rows, batches, "fxprune-latency", lambda aware, uniform: [
        f"{uniform['macs_factor']:.2f} / {aware['macs_factor']:.2f}" if uniform else "—",
        f"{uniform['floor_groups']} / {aware['floor_groups']}" if uniform else "—", aware["same_widths"]])
    lines = [f"### Uniform vs latency-aware allocation at the same MACs ({FLOOR_RUNTIME})", "",
             "Cells: speedup over the original (speedup ÷ MACs factor).", "", markdown_table(columns, table)]
    for batch in batches:
        pairs = [(u, a) for a in _find(aware, batch=batch)
                 for u in _find(rows, method="fxprune", runtime=FLOOR_RUNTIME, batch=batch, model=a["model"],
                                ratio=a["ratio"])]
        if pairs:
            uniform = statistics.median(u["efficiency"] for u, _ in pairs)
            latency = statistics.median(a["efficiency"] for _, a in pairs)
            faster = sum(a["speedup"] > u["speedup"] for u, a in pairs)
            lines.append(f"* batch {batch}: median speedup ÷ MACs {uniform:.2f} uniform, {latency:.2f} latency-aware; "
                         f"latency-aware faster in {faster} of {len(pairs)}")
    return lines + [""]


def write_markdown(rows, notes: list[str], batches, path: Path) -> None:
    runtimes = sorted({r["runtime"] for r in rows}, key=["ort-cpu", "torch-cpu", "ort-cuda", "torch-cuda"].index)
    lines = ["# Latency: original vs pruned", "", *[f"* {note}" for note in notes], "",
             "Cells: speedup over the original (speedup ÷ MACs reduction factor in parentheses).", ""]
    lines += allocation_table(rows, batches) + floor_summary(rows, batches) + peer_table(rows, batches)
    for runtime in runtimes:
        lines += _runtime_table(rows, runtime, batches)
    path.write_text("\n".join(lines))


def write_plot(rows, path: Path) -> None:
    """Speedup against MACs reduction factor per runtime and batch, with the ideal diagonal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 6))
    pruned = [r for r in rows if r["method"] != "original"]
    top = max([r["macs_factor"] for r in pruned] + [r["speedup"] for r in pruned] + [2.0]) * 1.05
    axes.plot([1, top], [1, top], "k--", linewidth=1, label="ideal (speedup = MACs factor)")
    markers = {"fxprune": "o", "fxprune-latency": "s", "torch-pruning": "x"}
    for runtime, batch in sorted({(r["runtime"], r["batch"]) for r in pruned}):
        for method, marker in markers.items():
            found = _find(pruned, runtime=runtime, batch=batch, method=method)
            if found:
                axes.scatter([r["macs_factor"] for r in found], [r["speedup"] for r in found], marker=marker,
                             label=f"{method} {runtime} b{batch}", alpha=0.75)
    axes.set_xlabel("MACs reduction factor (original / pruned)")
    axes.set_ylabel("measured speedup (original / pruned latency)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.legend(fontsize=7)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
