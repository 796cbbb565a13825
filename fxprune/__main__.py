"""``python -m fxprune``: compress a torchvision model on generated data and print what changed.

    python -m fxprune --model resnet18 --ratio 0.5
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from . import analyze, compress
from .measure import count_macs, count_parameters
from .oracle import compare


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18", help="a torchvision classification model name")
    parser.add_argument("--ratio", type=float, default=0.5, help="fraction of channels removed per group")
    parser.add_argument("--method", default="l1")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = torchvision.models.get_model(args.model, weights=None).eval()
    data = torch.randn(8, 3, args.size, args.size)
    example = (data[:1],)
    print(f"{args.model}: {analyze(model, data[:1]).__str__().splitlines()[0]}")
    start = time.perf_counter()
    small = compress(model, data, ratio=args.ratio, method=args.method)
    seconds = time.perf_counter() - start
    params = count_parameters(model), count_parameters(small)
    macs = count_macs(model, example), count_macs(small, example)
    print(f"compressed in {seconds:.2f} s with method={args.method}, ratio={args.ratio}")
    print(f"parameters {params[0]:>13,} -> {params[1]:>13,}  ({params[0] / params[1]:.2f}x fewer)")
    print(f"MACs       {macs[0]:>13,} -> {macs[1]:>13,}  ({macs[0] / macs[1]:.2f}x fewer)")
    print(f"output shape kept: {tuple(small(*example).shape)} (original {tuple(model(*example).shape)}); "
          f"ratio=0 round trip max difference: "
          f"{compare(compress(model, data[:1], ratio=0.0), model, example)[0]:.2e}")


if __name__ == "__main__":
    main()
