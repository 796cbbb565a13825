"""Training, evaluation and caching of the benchmark's baselines (CPU; CUDA when present)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from harness import RESULTS

CACHE = RESULTS / "cache"


def batches_of(x: torch.Tensor, y: torch.Tensor, size: int, generator=None):
    order = torch.randperm(len(x), generator=generator) if generator is not None else torch.arange(len(x))
    for start in range(0, len(x), size):
        pick = order[start:start + size]
        yield x[pick], y[pick]


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in batches_of(x, y, batch))
    return correct / len(x)


def augment(x: torch.Tensor, generator) -> torch.Tensor:
    """Random horizontal flips and ±2-pixel shifts."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
    return torch.roll(x, (dy, dx), (2, 3))


def train(model, x, y, steps: int, batch: int = 128, lr: float = 0.1, seed: int = 0) -> torch.nn.Module:
    """SGD with momentum, one-cycle learning rate; returns the model in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps, pct_start=0.2)
    model.train()
    step = 0
    while step < steps:
        for xb, yb in batches_of(x, y, batch, generator):
            loss = F.cross_entropy(model(augment(xb, generator)), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step >= steps:
                break
    return model.eval()


def cached_baseline(name: str, build, x, y, steps: int, tag: str) -> tuple[torch.nn.Module, float]:
    """The trained baseline from the cache, or train it now and cache it; also the seconds spent training."""
    path = CACHE / f"{tag}-{name}-{steps}.pt"
    model = build()
    if path.exists():
        model.load_state_dict(torch.load(path))
        return model.eval(), 0.0
    start = time.perf_counter()
    train(model, x, y, steps)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model, time.perf_counter() - start
