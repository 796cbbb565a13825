"""What each capture costs: torch.fx against torch.export, stage by stage, in one run.

For torchvision ``resnet50`` (both captures take it) and an 8-layer ``LlamaForCausalLM`` with hidden
size 512 (only export takes it): seconds of capture (the graph alone), shapes (one forward of the
first row), analysis, and a plan and rewrite at ratio 0.5 (``l1``), each the best of ``--repeats``
runs on one thread. The rows say how much of the export path is torch.export's own tracing.

    python benchmarks/capture_cost.py              # writes results/capture_cost.md
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision
from harness import markdown_table, write_result

from fxprune.analysis.analyze import analyze_graph
from fxprune.choose.criteria import get_criterion
from fxprune.choose.plan import kept_count, plan_from_scores
from fxprune.graph.capture import capture_graph
from fxprune.graph.inputs import Inputs
from fxprune.graph.shapes import propagate_shapes
from fxprune.pipeline import evaluating, plan_and_rewrite
from fxprune.rules import fuse_written_out, shape_shortcuts

STAGES = ("capture", "shapes", "analysis", "plan + rewrite")


def _resnet50():
    return torchvision.models.resnet50().eval(), (torch.randn(2, 3, 224, 224),)


def _llama8():
    import transformers

    config = transformers.LlamaConfig(vocab_size=1000, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                                      num_attention_heads=8, num_key_value_heads=4, use_cache=False)
    ids = torch.randint(0, 1000, (2, 32))
    return transformers.LlamaForCausalLM(config).eval(), Inputs([ids], ["input_ids"])


def _half(analysis):
    scores = get_criterion("l1")(analysis, None)
    return plan_from_scores(analysis, scores, [kept_count(g.size, 0.5, 8) for g in analysis.groups])


def _first_row(inputs):
    rows = [t[:1] for t in inputs]
    return Inputs(rows, inputs.keywords) if isinstance(inputs, Inputs) else tuple(rows)


def _stages(model, inputs, capture: str) -> dict[str, float]:
    first_row = _first_row(inputs)
    seconds = {}
    with evaluating(model):
        start = time.perf_counter()
        gm = capture_graph(model, inputs, capture)
        seconds["capture"] = time.perf_counter() - start
        start = time.perf_counter()
        propagate_shapes(gm, first_row, shape_shortcuts())
        fuse_written_out(gm)
        seconds["shapes"] = time.perf_counter() - start
        start = time.perf_counter()
        analyze_graph(gm)
        seconds["analysis"] = time.perf_counter() - start
        start = time.perf_counter()
        plan_and_rewrite(gm, first_row, _half)
        seconds["plan + rewrite"] = time.perf_counter() - start
    return seconds


def _best(model, inputs, capture: str, repeats: int) -> dict[str, float]:
    runs = [_stages(model, inputs, capture) for _ in range(repeats)]
    return {stage: min(run[stage] for run in runs) for stage in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for name, build, captures in [("resnet50 (2×3×224×224)", _resnet50, ("fx", "export")),
                                  ("Llama, 8 layers, hidden 512 (2×32 tokens)", _llama8, ("export",))]:
        model, inputs = build()
        for capture in captures:
            seconds = _best(model, inputs, capture, args.repeats)
            total = sum(seconds.values())
            rows.append([name, capture, *(f"{seconds[s]:.3f}" for s in STAGES), f"{total:.3f}",
                         f"{total - seconds['capture']:.3f}"])
            print(rows[-1], flush=True)
    text = (f"Seconds, best of {args.repeats}, one thread (`python benchmarks/capture_cost.py`).\n\n"
            + markdown_table(["model", "by", *STAGES, "total", "total without capture"], rows) + "\n")
    write_result("capture_cost.md", text)
    print(text)


if __name__ == "__main__":
    main()
