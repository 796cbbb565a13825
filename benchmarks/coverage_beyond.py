"""Beyond classifiers: every segmentation, detection and video model of torchvision, one line each.

Each model is compressed at ratio 0.5 with random weights (so no output is trivially zero) and
sorted into one of four outcomes:

* ``pruned``: channels removed and the oracle holds (pruned == original with those channels
  zeroed; shapes only where a LayerNorm mixes pruned channels);
* ``frozen``: it compressed, but every channel is frozen, each group with a reason;
* ``refused``: fxprune raised one of its own errors, with a message;
* ``failed``: anything else (a bug).

Detectors are pruned through ``compress_submodule(model, "backbone", ...)`` and must then still
return boxes for a list of images. The fuzz counts come from ``benchmarks/fuzz.py``.

    python benchmarks/coverage_beyond.py                      # all three families
    python benchmarks/coverage_beyond.py --families video     # one family
    python benchmarks/coverage_beyond.py s3d r3d_18           # a few by name
"""

from __future__ import annotations

import argparse
import collections
import json
import time
import traceback

import torch
import torchvision
from harness import RESULTS, markdown_table, use_test_support, write_result

use_test_support()
from helpers import compress_checked, parameter_count  # noqa: E402
from zoo import detection_images, detector, detector_size, segmentation_model, video_input, video_model  # noqa: E402

import fxprune  # noqa: E402

FAMILIES = ("segmentation", "detection", "video")


def _segmentation(name):
    model = segmentation_model(name)
    return model, model, (torch.randn(2, 3, 64, 64),), None


def _video(name):
    model = video_model(name)
    return model, model, (video_input(name),), None


def _detection(name):
    size = detector_size(name)
    model = detector(name, size)
    images = detection_images(size)
    return model, model.backbone, (model.transform(images)[0].tensors,), images


BUILD = {"segmentation": _segmentation, "detection": _detection, "video": _video}


def _frozen_reasons(analysis) -> list[str]:
    """Distinct reasons, without the node or tensor they name, most channels first."""
    counts = collections.Counter()
    for group in analysis.frozen:
        counts[group.reason.split(": ", 1)[-1].split(" (node")[0].split(" at node")[0]] += group.size
    return [f"{reason} ({n} ch)" for reason, n in counts.most_common(4)]


def run_one(family: str, name: str) -> dict:
    start = time.perf_counter()
    row = {"model": name, "family": family}
    try:
        whole, part, inputs, images = BUILD[family](name)
        before = parameter_count(whole)
        small, analysis, plan, result = compress_checked(part, inputs, ratio=0.5, expect_removed=False)
        if images is not None:  # the detector with its new backbone still detects
            fxprune.compress_submodule(whole, "backbone", inputs[0], ratio=0.5, method="random", round_to=1)
            with torch.no_grad():
                boxes = whole(images)
            assert all(d["boxes"].shape[-1] == 4 for d in boxes)
            after = parameter_count(whole)
        else:
            after = parameter_count(small)
        row.update(status="pruned" if plan.removed_channels else "frozen", params_x=round(before / after, 2),
                   oracle="exact" if result.exact else "shapes", rel_diff=float(f"{result.relative:.1e}"),
                   groups=len(analysis.groups), frozen_groups=len(analysis.frozen),
                   frozen_reasons=_frozen_reasons(analysis))
    except fxprune.FxpruneError as error:
        row.update(status="refused", error=f"{type(error).__name__}: {str(error)[:300]}")
    except Exception as error:  # noqa: BLE001 — a benchmark reports every failure and goes on
        row.update(status="failed", error=f"{type(error).__name__}: {str(error)[:300]}",
                   where=traceback.format_exc(limit=-2)[-600:])
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


COLUMNS = ["family", "model", "status", "params_x", "oracle", "rel_diff", "groups", "frozen_groups", "seconds"]


def _table(rows: list[dict]) -> str:
    def cells(r):
        note = "; ".join(r.get("frozen_reasons", [])) or r.get("error", "")
        return [r.get(c, "") for c in COLUMNS] + [note.replace("|", "/").replace("\n", " ")]

    return markdown_table([*COLUMNS, "main frozen reasons / error"], [cells(r) for r in rows])


def _merged(rows: list[dict]) -> list[dict]:
    """This run's rows over those of earlier runs (a partial run updates only its models)."""
    path = RESULTS / "coverage_beyond.json"
    earlier = json.loads(path.read_text())["models"] if path.exists() else []
    fresh = {r["model"] for r in rows}
    merged = [r for r in earlier if r["model"] not in fresh] + rows
    return sorted(merged, key=lambda r: (FAMILIES.index(r["family"]), r["model"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model names (default: every model of the families)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    jobs = [(f, n) for f in args.families for n in torchvision.models.list_models(getattr(torchvision.models, f))
            if not args.models or n in args.models]
    rows = []
    for family, name in jobs:
        rows.append(run_one(family, name))
        print(json.dumps(rows[-1]), flush=True)
    rows = _merged(rows)
    counts = collections.Counter((r["family"], r["status"]) for r in rows)
    families = sorted({r["family"] for r in rows}, key=FAMILIES.index)
    summary = {f: {s: counts[(f, s)] for s in ("pruned", "frozen", "refused", "failed")} for f in families}
    write_result("coverage_beyond.json", json.dumps({"summary": summary, "models": rows}, indent=1))
    text = _table(rows) + "\n\n" + "\n".join(f"- {f}: {s}" for f, s in summary.items()) + "\n"
    write_result("coverage_beyond.md", text)
    print(text)


if __name__ == "__main__":
    main()
