"""Ranks of torch.distributed (gloo, CPU) saving and loading DCP checkpoints through expstore, for
tests/integrations/test_dcp.py: `python -m tests.workers.dcp_workers '[[scenario, world_size, args], ...]'`
runs each step's ranks with torch.multiprocessing.spawn, one step after the other.

Scenarios: `save` (a sharded state of DTensors), `load` (into another world size, compared with the
state that was saved, then a second save to the same URL, which must be refused), `die` (rank
`args["die_rank"]` kills itself after writing its data object, before the commit)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

from expstore.integrations.dcp import StoreReader, StoreWriter

STEP = 5


def full_state() -> dict[str, Any]:
    """The unsharded state every scenario saves: uneven row shards, column shards, bfloat16, a replicated
    tensor, a plain tensor and a non-tensor value."""
    g = torch.Generator().manual_seed(0)
    return {
        "model": {"w": torch.randn(10, 6, generator=g), "emb": torch.randn(4, 9, generator=g),
                  "b": torch.arange(7).to(torch.bfloat16)},
        "rep": torch.randn(3, generator=g),
        "plain": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "step": STEP,
    }


PLACEMENTS = {"w": Shard(0), "emb": Shard(1), "b": Shard(0)}


def sharded(state: dict[str, Any], mesh: Any) -> dict[str, Any]:
    """`state` with the model's tensors sharded over `mesh` and `rep` replicated on it."""
    model = {name: distribute_tensor(t, mesh, [PLACEMENTS[name]]) for name, t in state["model"].items()}
    return {**state, "model": model, "rep": distribute_tensor(state["rep"], mesh, [Replicate()])}


def zeros_like_state(mesh: Any) -> dict[str, Any]:
    """A target for `dcp.load`: the same layout as `sharded(full_state())`, every value zero."""
    state = full_state()
    blank = {"model": {n: torch.zeros_like(t) for n, t in state["model"].items()}, "rep": torch.zeros(3),
             "plain": torch.zeros(2, 3, dtype=torch.int64), "step": 0}
    return sharded(blank, mesh)


def check_equal(loaded: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every loaded value equals the saved one (DTensors compared as full tensors, dtypes included)."""
    for name, tensor in expected["model"].items():
        got = loaded["model"][name]
        assert isinstance(got, DTensor), name
        full = got.full_tensor()
        assert full.dtype == tensor.dtype and torch.equal(full, tensor), name
    assert torch.equal(loaded["rep"].full_tensor(), expected["rep"])
    assert torch.equal(loaded["plain"], expected["plain"])
    assert loaded["step"] == STEP, loaded["step"]


class DyingWriter(StoreWriter):
    """A StoreWriter whose rank `die_rank` writes its data object and then dies (SIGKILL or os._exit)."""

    def __init__(self, url: str, die_rank: int, how: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.die_rank, self.how = die_rank, how

    def write_data(self, plan: Any, planner: Any) -> Any:
        future = super().write_data(plan, planner)
        if self.rank == self.die_rank:
            if self.how == "sigkill":
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(3)
        return future


def run_rank(rank: int, world: int, port: int, scenario: str, args: dict[str, Any]) -> None:
    """One rank of `scenario`."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        mesh = init_device_mesh("cpu", (world,))
        url, options = args["url"], args["options"]
        if scenario == "save":
            dcp.save(sharded(full_state(), mesh), storage_writer=StoreWriter(url, **options))
        elif scenario == "load":
            loaded = zeros_like_state(mesh)
            dcp.load(loaded, storage_reader=StoreReader(url, **options))
            check_equal(loaded, full_state())
            try:
                dcp.save(sharded(full_state(), mesh), storage_writer=StoreWriter(url, **options))
            except CheckpointException as exc:
                assert "already committed" in str(exc), str(exc)
            else:
                raise AssertionError("a second save to a committed URL was not refused")
        elif scenario == "die":
            dcp.save(sharded(full_state(), mesh), storage_writer=DyingWriter(url, args["die_rank"], args["how"], **options))
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    for scenario, world, arguments in json.loads(sys.argv[1]):
        mp.spawn(run_rank, args=(world, free_port(), scenario, arguments), nprocs=world, join=True)
