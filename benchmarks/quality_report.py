"""Tables and plot of the quality benchmark: mean ± standard deviation over seeds."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import numpy as np
from harness import RESULTS, markdown_table, write_result


def _stat(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


def label(row: dict) -> str:
    """The method's name, with the allocation when it is not the default: ``l1 (latency)``."""
    allocation = row.get("allocation", "score")
    return row["method"] if allocation == "score" else f"{row['method']} ({allocation})"


def summarise(rows: list[dict]) -> dict:
    grouped = defaultdict(list)
    for row in rows:
        grouped[(row["model"], row["target"], label(row))].append(row)
    return grouped


def _paired_difference(first: list[dict], second: list[dict], key: str) -> str:
    """Mean ± standard deviation over seeds of ``second - first`` (same seed, same calibration images)."""
    by_seed = {r["seed"]: r[key] for r in first}
    differences = [r[key] - by_seed[r["seed"]] for r in second if r["seed"] in by_seed]
    return f"{100 * np.mean(differences):+.1f} ± {100 * np.std(differences):.1f}" if differences else "—"


STAGES = {"raw": "no fine-tune", "refit": "+ LS refit", "finetuned": "+ fine-tune"}  # a row's accuracies


def allocation_table(rows: list[dict]) -> list[str]:
    """Each method under ``score`` (one ratio everywhere) and ``latency`` allocation side by side, with the
    paired difference in points, for each stage that has its own numbers; empty unless both ran."""
    grouped = defaultdict(lambda: defaultdict(list))
    for row in rows:
        grouped[(row["model"], row["target"], row["method"])][row.get("allocation", "score")].append(row)
    pairs = {key: runs for key, runs in grouped.items() if {"score", "latency"} <= set(runs)}
    if not pairs:
        return []
    columns = ["model", "MACs kept (score / latency)", "method", "accuracy", "score (%)", "latency (%)",
               "latency − score"]
    cells = []
    for (model, _, method), runs in pairs.items():
        score, latency = runs["score"], runs["latency"]
        macs = f"{np.mean([r['macs'] for r in score]):.3f} / {np.mean([r['macs'] for r in latency]):.3f}"
        for key, stage in STAGES.items():
            if score[0][key] is None or (key == "refit" and all(r["refit"] == r["raw"] for r in score)):
                continue
            cells.append([f"{model} (base {100 * score[0]['baseline']:.1f})", macs, method, stage,
                          _stat([r[key] for r in score]), _stat([r[key] for r in latency]),
                          _paired_difference(score, latency, key)])
    return ["", "## Score (uniform) vs latency-aware allocation at the same MACs", "", markdown_table(columns, cells)]


def _wins(first: list[dict], second: list[dict], key: str) -> str:
    """On how many seeds ``second`` kept more than ``first``."""
    by_seed = {r["seed"]: r[key] for r in first}
    pairs = [(r[key], by_seed[r["seed"]]) for r in second if r["seed"] in by_seed]
    return f"{sum(a > b for a, b in pairs)} of {len(pairs)}"


PAIRED = ("mlacp", ("reconstruction", "l1+kd"))  # the method, and those it is compared with seed by seed


def paired_table(rows: list[dict]) -> list[str]:
    """MLACP against each rival on the same calibration images (seed by seed): the paired difference
    removes what the draw of images does to both; empty unless both ran. Without fine-tuning, and
    after fine-tuning when it ran: then MLACP is followed by the benchmark's distillation steps, and
    ``l1+kd`` distils once for as long as MLACP and those steps took, so both had the same seconds."""
    method, rivals = PAIRED
    grouped = summarise(rows)
    cells = []
    for (model, target, name), runs in grouped.items():
        if name != method:
            continue
        for rival, key in itertools.product(rivals, ("raw", "finetuned")):
            other = grouped.get((model, target, rival))
            if other and (key == "raw" or any(r.get("finetune_steps") for r in runs)):
                cells.append([model, f"{np.mean([r['macs'] for r in runs]):.3f}", f"{method} − {rival}", STAGES[key],
                              _paired_difference(other, runs, key), _wins(other, runs, key)])
    if not cells:
        return []
    columns = ["model", "MACs kept", "difference", "stage", "points (mean ± sd over seeds)", "seeds won"]
    return ["", f"## {method} against {', '.join(rivals)}, seed by seed", "", markdown_table(columns, cells)]


COLUMNS = ["model", "MACs kept", "method", "no fine-tune (%)", "+ LS refit (%)", "+ fine-tune (%)", "prune s",
           "refit s", "fine-tune s"]


def table(rows: list[dict]) -> list[str]:
    cells = []
    for (model, _, method), group in summarise(rows).items():
        def mean(key, group=group):
            return np.mean([r[key] for r in group if r.get(key) is not None] or [np.nan])

        cells.append([f"{model} (base {100 * group[0]['baseline']:.1f})", f"{mean('macs'):.3f}", method,
                      _stat([r["raw"] for r in group]), _stat([r["refit"] for r in group]),
                      _stat([r["finetuned"] for r in group]), f"{mean('seconds'):.1f}",
                      f"{mean('refit_seconds'):.1f}", f"{mean('finetune_seconds'):.1f}"])
    return [markdown_table(COLUMNS, cells)]


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    figure, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        lines = defaultdict(list)
        for (m, _, method), group in summarise(rows).items():
            if m == model:
                raw = [r["raw"] for r in group]
                lines[method].append((np.mean([r["macs"] for r in group]), np.mean(raw), np.std(raw)))
        for method, points in sorted(lines.items()):
            points.sort()
            xs, ys, es = zip(*points)
            style = "-o" if method.startswith("mlacp") else "--." if method.startswith("tp_") else ":x"
            ax.errorbar(xs, [100 * y for y in ys], [100 * e for e in es], fmt=style, label=method, capsize=2)
        ax.set_title(f"{model}: accuracy without fine-tuning")
        ax.set_xlabel("fraction of the original MACs kept")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_report(rows: list[dict], args, name: str) -> None:
    """``results/{name}.md`` (the command, the table, the allocation table) and ``results/{name}.png``."""
    command = "python benchmarks/quality.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in sorted(vars(args).items()) if v not in (None, False) and k not in ("timing", "timing_runs"))
    header = [f"# Quality benchmark ({args.data})", "", f"    {command}", "",
              f"{args.seeds} seeds (calibration draws) of {args.calibration} images; BatchNorm recalibrated for "
              f"every method; fine-tuning: {args.finetune_steps} steps of distillation from the baseline on the "
              "calibration images. Accuracy: mean ± standard deviation over seeds.", ""]
    write_result(f"{name}.md", "\n".join(header + table(rows) + paired_table(rows) + allocation_table(rows))
                 + f"\n\n![accuracy vs MACs]({Path(name).name}.png)\n")
    plot(rows, RESULTS / f"{name}.png")
