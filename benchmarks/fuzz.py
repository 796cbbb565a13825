"""The long fuzz run: many random architectures through compress, the oracle and (optionally) ONNX.

Each architecture from ``tests/fuzz_models.architectures`` is compressed at a random ratio and
checked (see ``fuzz_models.check``). Outcomes are counted as pruned / frozen / refused; anything
else is a failure, printed with the architecture so that ``check(spec, ratio)`` reproduces it.

    python benchmarks/fuzz.py --examples 2000 --seed 1          # about 0.2 s an example, one thread
    python benchmarks/fuzz.py --examples 300 --export           # ONNX export and parity as well
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time

import torch
from harness import use_test_support, write_result
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

use_test_support()
from fuzz_models import REFUSALS, architectures, check  # noqa: E402


def run(examples: int, random_seed: int, export: bool, max_blocks: int) -> dict:
    counts: collections.Counter = collections.Counter()
    failures: list[dict] = []
    export_dir = tempfile.mkdtemp() if export else None

    @seed(random_seed)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(architectures(max_blocks), st.sampled_from([0.2, 0.3, 0.5, 0.7, 0.9]))
    def one(spec, ratio):
        try:
            counts[check(spec, ratio, export_dir)] += 1
        except Exception as error:  # noqa: BLE001 — every failure is recorded, the run goes on
            counts["failed"] += 1
            failures.append({"spec": spec, "ratio": ratio, "error": f"{type(error).__name__}: {str(error)[:400]}"})

    start = time.perf_counter()
    one()
    seconds = time.perf_counter() - start
    return {"examples": sum(counts.values()), "counts": dict(counts), "seconds": round(seconds, 1),
            "seed": random_seed, "export": export, "max_blocks": max_blocks, "failures": failures,
            "refusals": [{"spec": spec, "ratio": ratio, "error": error} for spec, ratio, error in REFUSALS]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-blocks", type=int, default=8)
    parser.add_argument("--export", action="store_true", help="also export each pruned model to ONNX and compare")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny tensors: one thread is several times faster than two competing
    torch.set_flush_denormal(True)
    report = run(args.examples, args.seed, args.export, args.max_blocks)
    name = f"fuzz_seed{args.seed}{'_export' if args.export else ''}.json"
    write_result(name, json.dumps(report, indent=1, default=str))
    print(json.dumps({k: v for k, v in report.items() if k not in ("failures", "refusals")}))
    for entry in report["failures"][:20] + report["refusals"][:10]:
        print(entry)


if __name__ == "__main__":
    main()
