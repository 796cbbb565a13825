"""What ``fxprune inspect`` shows: groups and layer widths in graph order, and the widths plot."""

from __future__ import annotations

import math

import torch
import torch.fx


def module_positions(gm) -> dict[str, int]:
    """Module name -> index of the first graph node that calls it or reads one of its parameters."""
    positions: dict[str, int] = {}
    graph = getattr(gm, "graph", None)  # a model that comes back as its own class (GoogLeNet) has none
    for index, node in enumerate(graph.nodes if isinstance(graph, torch.fx.Graph) else ()):
        if node.op == "call_module":
            positions.setdefault(str(node.target), index)
        elif node.op == "get_attr":
            positions.setdefault(str(node.target).rpartition(".")[0], index)
    return positions


def in_graph_order(groups, positions: dict[str, int]) -> list:
    """Group summaries sorted by the first graph node among their layers (``"layer1.0.conv1 (out)"``)."""
    def first(group) -> float:
        return min((positions.get(layer.rpartition(" (")[0], math.inf) for layer in group.layers), default=math.inf)
    return sorted(groups, key=first)


def layer_widths(model: torch.nn.Module, small: torch.nn.Module) -> list[tuple[str, str, int, int]]:
    """(layer, kind, output channels before, after) for every conv and linear layer of ``model``, in graph order."""
    rows = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.nn.Parameter) or weight.dim() < 2:
            continue
        try:
            after = small.get_submodule(name).weight.shape[0]
        except AttributeError:
            continue  # a layer the traced graph does not use
        rows.append((name, type(module).__name__, weight.shape[0], after))
    positions = module_positions(small)
    return sorted(rows, key=lambda row: positions.get(row[0], math.inf))


def width_figure(rows, title: str):
    """A bar chart of output channels per layer, before and after, layer names along the x-axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(max(6.0, len(rows) * 0.15), 5))
    positions = range(len(rows))
    axes.bar(positions, [r[2] for r in rows], color="#c6dbef", label="original")
    axes.bar(positions, [r[3] for r in rows], color="#2171b5", label="pruned")
    axes.set_xticks(list(positions), [r[0] for r in rows], rotation=90, fontsize=5)
    axes.set_xlim(-0.6, len(rows) - 0.4)
    axes.set_xlabel("layer (in graph order)")
    axes.set_ylabel("output channels")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    return figure


def plot_widths(rows, title: str, path) -> None:
    import matplotlib.pyplot as plt

    figure = width_figure(rows, title)
    figure.savefig(path, dpi=150)
    plt.close(figure)


def print_groups(report, limit: int | None) -> None:
    positions = module_positions(report.analysis.gm)
    groups = in_graph_order(report.groups, positions)
    print(str(report).splitlines()[0] + " (in graph order)")
    shown = groups if limit is None else groups[:limit]
    for i, group in enumerate(shown):
        print(f"[{i}] {group}")
    if len(shown) < len(groups):
        print(f"... {len(groups) - len(shown)} more prunable groups (--all shows them)")
    print(f"\nfrozen groups ({len(report.frozen)}), and why:")
    for group in in_graph_order(report.frozen, positions):
        print(f"  {group.channels:5d} channels  {', '.join(group.layers[:3])}: {group.frozen_reason}")
