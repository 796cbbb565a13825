"""Check that the meta-tensor shape run records exactly what a real forward pass records.

    python benchmarks/meta_shapes.py                      # every classification, segmentation and video model
    python benchmarks/meta_shapes.py resnet50 swin_t      # a few by name
    python benchmarks/meta_shapes.py --skip-largest       # leave out the six models over 300M parameters

One line per model: whether the meta run succeeded (else why: those models take the real run),
whether its shapes equal the real run's, and both times (batch 1, one thread).
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from fxprune.graph.capture import trace
from fxprune.graph.shapes import MetaShapePropagation, ShapePropagation, tensor_shapes

LARGEST = {"regnet_y_128gf", "regnet_y_32gf", "regnet_y_16gf", "vit_h_14", "vit_l_16", "vit_l_32"}
VIDEO_INPUTS = {"s3d": (1, 3, 16, 224, 224), "mvit_v1_b": (1, 3, 16, 224, 224), "mvit_v2_s": (1, 3, 16, 224, 224),
                "swin3d_t": (1, 3, 8, 224, 224), "swin3d_s": (1, 3, 8, 224, 224), "swin3d_b": (1, 3, 8, 224, 224)}


def _model_and_input(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    segmentation = name in torchvision.models.list_models(module=torchvision.models.segmentation)
    video = name in torchvision.models.list_models(module=torchvision.models.video)
    extra = {"weights_backbone": None} if segmentation else {}
    model = torchvision.models.get_model(name, weights=None, **extra).eval()
    if video:
        return model, torch.randn(VIDEO_INPUTS.get(name, (1, 3, 16, 112, 112)))
    size = 299 if name == "inception_v3" else 224
    return model, torch.randn(1, 3, size, size)


def _run(propagation, gm, example) -> tuple[dict, float]:
    for node in gm.graph.nodes:
        node.meta.pop("tensor_meta", None)
    start = time.perf_counter()
    with torch.no_grad():
        propagation(gm).propagate(example)
    return {n.name: tensor_shapes(n) for n in gm.graph.nodes}, time.perf_counter() - start


def check(name: str) -> str:
    model, example = _model_and_input(name)
    gm = trace(model)
    real, real_seconds = _run(ShapePropagation, gm, example)
    try:
        meta, meta_seconds = _run(MetaShapePropagation, gm, example)
    except Exception as error:
        return f"{name}: meta run failed ({type(error).__name__}: {str(error)[:80]}); real {real_seconds:.3f} s"
    verdict = "same shapes" if meta == real else "SHAPES DIFFER"
    return f"{name}: {verdict}; meta {meta_seconds:.3f} s, real {real_seconds:.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--skip-largest", action="store_true")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    names = args.models or [n for module in (torchvision.models, torchvision.models.segmentation,
                                             torchvision.models.video)
                            for n in torchvision.models.list_models(module=module)]
    for name in names:
        if args.skip_largest and name in LARGEST:
            continue
        print(check(name), flush=True)


if __name__ == "__main__":
    main()
