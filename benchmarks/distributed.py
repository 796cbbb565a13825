"""Seconds for ``compress(method="mlacp")`` and one ``finetune`` epoch, in one process and spread over several.

    python benchmarks/distributed.py                      # 1 process (1 and 2 threads), 2 processes (gloo, CPU)
    python benchmarks/distributed.py --images 512 --depth 32 --processes 1 2 4

On N GPUs (one process per GPU, NCCL; each rank takes its shard of the same generated data):

    torchrun --nproc_per_node=N benchmarks/distributed.py --torchrun

A CIFAR-style ResNet (``quality_models.CifarResNet``, random weights) on generated 32×32 images with
labels: the same ``--images`` in every run, split into one shard per process (strong scaling), so
the time per run falls as processes are added only where the work per rank is what dominates.
Each time is the slowest rank's (a barrier before and after). MLACP's time includes its per-group
collectives; the fine-tuning epoch is ``DistributedDataParallel`` over the shards.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from harness import markdown_header, markdown_row
from quality_models import CifarResNet

import fxprune

BATCH = 32


def dataset(images: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(images, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (images,), generator=generator)
    return [(x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, images, BATCH)]


def shard(batches: list, rank: int, world: int) -> list:
    return batches[rank::world]


def _synced_seconds(function) -> tuple[float, object]:
    """Seconds until every rank has finished ``function`` (barriers around it when a group is active)."""
    if dist.is_initialized():
        dist.barrier()
    start = time.perf_counter()
    result = function()
    if dist.is_initialized():
        dist.barrier()
    return time.perf_counter() - start, result


def measure(args, rank: int, world: int) -> dict:
    torch.manual_seed(0)
    model = CifarResNet(args.depth, args.width).eval()
    data = shard(dataset(args.images), rank, world)
    method = fxprune.MLACP(progress=False)
    mlacp_s, small = _synced_seconds(lambda: fxprune.compress(model, data, ratio=0.5, method=method,
                                                              max_batches=None))
    epoch_s, _ = _synced_seconds(lambda: fxprune.finetune(small, data, teacher=model, epochs=1))
    return {"mlacp": mlacp_s, "epoch": epoch_s, "batches": len(data)}


def _worker(rank: int, world: int, threads: int, port: int, out: str, args) -> None:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"tcp://127.0.0.1:{port}")
    try:
        result = measure(args, rank, world)
        if rank == 0:
            torch.save(result, out)
    finally:
        if world > 1:
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawned(args, world: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.pt")
        mp.spawn(_worker, args=(world, threads, _free_port(), out, args), nprocs=world, join=True)
        return torch.load(out)


def under_torchrun(args) -> None:
    """One measurement with the group torchrun set up (NCCL on GPUs, gloo otherwise)."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        result = measure(args, dist.get_rank(), dist.get_world_size())
        if dist.get_rank() == 0:
            print(markdown_header(["processes", "mlacp s", "finetune epoch s"]))
            print(markdown_row([dist.get_world_size(), f"{result['mlacp']:.1f}", f"{result['epoch']:.2f}"]))
    finally:
        dist.destroy_process_group()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="calibration and training images in all")
    parser.add_argument("--depth", type=int, default=20, help="ResNet depth (6n+2)")
    parser.add_argument("--width", type=int, default=8, help="channels of the first stage")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--torchrun", action="store_true", help="measure once, in the group torchrun started")
    args = parser.parse_args(argv)
    if args.torchrun:
        return under_torchrun(args)
    runs = sorted({(n, 1) for n in args.processes} | {(1, max(args.processes))})
    print(f"CifarResNet-{args.depth} width {args.width}, {args.images} images of 32×32 in batches of {BATCH}, "
          f"{os.cpu_count()} CPUs, gloo")
    print(markdown_header(["processes", "threads each", "batches per rank", "mlacp s", "finetune epoch s"]))
    for world, threads in runs:
        result = spawned(args, world, threads)
        print(markdown_row([world, threads, result["batches"], f"{result['mlacp']:.1f}", f"{result['epoch']:.2f}"]),
              flush=True)


if __name__ == "__main__":
    main()
