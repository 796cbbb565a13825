"""fxprune inside ``torch.distributed``: two CPU processes (gloo), each with its own shard of one dataset.

One spawn runs every scenario (starting two processes costs more than the scenarios); each rank
writes what it got to a file, and the tests compare the ranks with each other and with one process
given both shards. Scenarios that decompose exactly (Taylor, reconstruction with its refit, BatchNorm
recalibration) must equal the one-process result; MLACP and fine-tuning must leave both ranks equal.
"""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fxprune
from fxprune.choose.mlacp import MLACP
from fxprune.compress import _described
from fxprune.errors import InputError
from fxprune.graph import distributed

WORLD = 2
BATCH = 4  # rows per refit batch: 4 × 8 × 8 = 256 ≤ rows_per_batch(any count), so no draw cuts rows
TIMEOUT = 150  # seconds for the whole spawn: a hang fails the tests instead of stalling them


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():  # statistics unlike the reset ones, so recalibration shows
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    return model.eval()


def shard(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank ``rank``'s batches of a fixed dataset of 16 images (8×8) with labels; the shards differ in
    their channels' scale, so that a rank alone would choose another plan than both together."""
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 8, 8, generator=generator), torch.randint(0, 10, (16,), generator=generator)
    x[8:] = x[8:] * torch.tensor([0.2, 1.0, 3.0]).view(1, 3, 1, 1) + 1.0
    rows = range(rank * 8, rank * 8 + 8, BATCH)
    return [(x[i:i + BATCH], y[i:i + BATCH]) for i in rows]


def every_shard() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [batch for rank in range(WORLD) for batch in shard(rank)]


def compressed(data, method) -> dict:
    small = fxprune.compress(tiny_model(), data, ratio=0.5, method=method, round_to=1)
    return {"plan": small.fxprune_plan.to_json(), "state": copy.deepcopy(small.state_dict())}


def recalibrated(data) -> dict:
    small = fxprune.compress(tiny_model(), data, ratio=0.5, round_to=1, recalibrate_bn=True)
    return {"plan": small.fxprune_plan.to_json(), "state": copy.deepcopy(small.state_dict())}


def mismatched(rank: int) -> str:
    try:
        fxprune.compress(tiny_model(), shard(rank), ratio=0.5 if rank == 0 else 0.3, round_to=1)
    except InputError as error:
        return str(error)
    return "no error"


def bad_shard(rank: int) -> str:
    """Rank 1's shard holds a NaN: rank 1 raises its own error, rank 0 one naming rank 1."""
    data = shard(rank)
    if rank == 1:
        data[0][0][0, 0, 0, 0] = float("nan")
    try:
        fxprune.compress(tiny_model(), data, ratio=0.5, round_to=1)
    except InputError as error:
        return str(error)
    return "no error"


def by_rank(analysis, batches) -> list[np.ndarray]:
    """A criterion that does not reduce what it measures: the ranks rank channels in opposite orders."""
    sign = 1 if dist.get_rank() == 0 else -1
    return [sign * np.arange(group.size, dtype=float) for group in analysis.groups]


def unreduced(rank: int) -> str:
    try:
        fxprune.compress(tiny_model(), shard(rank), ratio=0.5, method=by_rank, round_to=1)
    except InputError as error:
        return str(error)
    return "no error"


def finetuned(rank: int) -> dict:
    model = tiny_model()
    small = fxprune.compress(model, shard(rank), ratio=0.5, round_to=1)
    tuned = fxprune.finetune(small, shard(rank), teacher=model, epochs=6, lr=0.05, device="cpu")
    return {"log": tuned.fxprune_finetune_log, "state": copy.deepcopy(tuned.state_dict()),
            "wrapped": type(tuned).__name__}


def mlacp(rank: int) -> dict:
    small = fxprune.compress(tiny_model(), shard(rank), ratio=0.5, round_to=1, method=MLACP(steps=2, progress=False))
    return {"plan": small.fxprune_plan.to_json(), "state": copy.deepcopy(small.state_dict())}


SCENARIOS = {
    "taylor": lambda rank: compressed(shard(rank), "taylor"),
    "reconstruction": lambda rank: compressed(shard(rank), "reconstruction"),
    "recalibrate_bn": lambda rank: recalibrated(shard(rank)),
    "mismatch": mismatched,
    "unreduced": unreduced,
    "bad_shard": bad_shard,
    "finetune": finetuned,
    "mlacp": mlacp,
}


def _worker(rank: int, port: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, init_method=f"tcp://127.0.0.1:{port}")
    results = {}
    try:
        for name, scenario in SCENARIOS.items():
            try:
                results[name] = scenario(rank)
            except Exception as error:  # recorded, so one failing scenario fails its own test only
                results[name] = {"error": f"{type(error).__name__}: {error}"}
        results["helpers"] = {"active": distributed.active(), "world": distributed.world_size(),
                              "main": distributed.is_main(),
                              "sum": distributed.all_reduce_sum(torch.tensor([float(rank + 1)])).item()}
    finally:
        torch.save(results, f"{folder}/rank{rank}.pt")
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("distributed")
    context = mp.start_processes(_worker, args=(_free_port(), str(folder)), nprocs=WORLD, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish within {TIMEOUT} s (a hang)")
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def one_process() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {"taylor": compressed(every_shard(), "taylor"),
                "reconstruction": compressed(every_shard(), "reconstruction"),
                "recalibrate_bn": recalibrated(every_shard())}
    finally:
        torch.set_num_threads(threads)


def _result(ranks, name) -> list[dict]:
    results = [r[name] for r in ranks]
    for rank, result in enumerate(results):
        assert not (isinstance(result, dict) and "error" in result), f"rank {rank}: {result['error']}"
    return results


def _assert_states_close(a: dict, b: dict, tolerance: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].double(), b[key].double(), atol=tolerance, rtol=0), key


def test_the_helpers_see_the_group(ranks):
    helpers = _result(ranks, "helpers")
    assert [h["main"] for h in helpers] == [True, False]
    assert all(h["active"] and h["world"] == WORLD and h["sum"] == 3.0 for h in helpers)


def test_the_helpers_do_nothing_without_a_group():
    tensor = torch.tensor([2.0])
    assert not distributed.active() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.all_reduce_sum(tensor) is tensor and tensor.item() == 2.0
    distributed.check_same("ratio", 0.5)  # nothing to compare with


@pytest.mark.parametrize("name", ["taylor", "reconstruction", "recalibrate_bn"])
def test_every_rank_gets_the_one_process_plan_on_all_shards(ranks, one_process, name):
    first, second = _result(ranks, name)
    assert first["plan"] == second["plan"] == one_process[name]["plan"]
    _assert_states_close(first["state"], second["state"], 0)
    _assert_states_close(first["state"], one_process[name]["state"], 1e-5)  # refit weights, BatchNorm statistics


@pytest.mark.parametrize("name", ["taylor", "reconstruction"])
def test_the_reduction_matters_one_shard_alone_gives_another_plan(one_process, name):
    alone = [compressed(shard(rank), name)["plan"] for rank in range(WORLD)]
    assert any(plan != one_process[name]["plan"] for plan in alone)


def test_recalibration_uses_both_shards(ranks, one_process):
    """The statistics differ from those of rank 0's shard alone: the other rank's batches count."""
    alone = recalibrated(shard(0))["state"]
    state = _result(ranks, "recalibrate_bn")[0]["state"]
    assert not torch.allclose(alone["1.running_mean"], state["1.running_mean"], atol=1e-3)


def test_a_ratio_that_differs_between_ranks_is_an_input_error_on_every_rank(ranks):
    for message in _result(ranks, "mismatch"):
        assert message.startswith("ratio:") and "rank(s) 1 differ" in message, message


def test_a_bad_batch_on_one_rank_is_an_error_on_every_rank(ranks):
    first, second = _result(ranks, "bad_shard")
    assert first.startswith("rank 1 failed, so every rank stops: InputError:"), first
    assert "nan" in second.lower() or "finite" in second.lower(), second


def test_ranks_that_choose_different_plans_get_an_error_naming_the_method(ranks):
    for message in _result(ranks, "unreduced"):
        assert message.startswith("method: the ranks chose different plans"), message


def test_ddp_finetuning_lowers_the_loss_and_leaves_the_same_weights_on_every_rank(ranks):
    first, second = _result(ranks, "finetune")
    assert first["log"] == second["log"]  # averaged over the ranks
    assert first["log"][-1] < first["log"][0]
    assert first["wrapped"] == second["wrapped"] == "GraphModule"  # returned unwrapped
    _assert_states_close(first["state"], second["state"], 0)


def test_mlacp_keeps_the_same_channels_and_weights_on_every_rank(ranks):
    first, second = _result(ranks, "mlacp")
    assert first["plan"] == second["plan"]
    _assert_states_close(first["state"], second["state"], 0)


def test_arguments_are_compared_without_memory_addresses():
    """A function is compared by its qualified name, an object by its repr with addresses removed."""
    assert _described(by_rank) == "test_distributed.by_rank"
    assert "0x" not in _described(object())
    assert _described(MLACP(steps=2)) == repr(MLACP(steps=2))


def _cli(tmp_path, *launcher: str) -> tuple[str, str]:
    """``fxprune compress`` as a shell user runs it (under ``launcher``); its stdout and stderr."""
    command = [sys.executable, *launcher, "-m", "fxprune", "compress", "resnet18", "--size", "32", "--samples", "8",
               "--batch-size", "2", "--method", "taylor", "--round-to", "1", "--save", str(tmp_path / "small.fxprune")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


def test_torchrun_compress_shares_the_scoring_and_writes_once(tmp_path):
    """``torchrun -m fxprune compress``: the ranks split the 8 images, reduce taylor's sums, and rank 0
    alone reports and saves — the same plan one process makes on all 8."""
    alone = tmp_path / "alone"
    alone.mkdir()
    _cli(alone)
    out, err = _cli(tmp_path, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}")
    assert out.count("compressed resnet18") == 1 and err.count("pruned in") == 1
    assert "rank 0 of 2 takes batch 1 in 2" in err
    plans = [fxprune.Plan.from_json((f / "small.fxprune" / "plan.json").read_text()) for f in (alone, tmp_path)]
    assert plans[0].to_json() == plans[1].to_json() and plans[0].removed_channels > 0
