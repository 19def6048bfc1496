"""Ranks of torch.distributed (gloo, CPU) saving and loading DCP checkpoints through expstore, for
tests/integrations/test_dcp.py: `python -m tests.workers.dcp_workers '[[scenario, world_size, args], ...]'`
runs each step's ranks with torch.multiprocessing (forked from this process, which has imported torch
once, so a rank starts in milliseconds instead of importing torch again), one step after the other.

Scenarios: `save` (a sharded state of DTensors to `url`; with `fsdp_url`, also an FSDP2 model and its
Adam state after one step; with `async_url`, the DTensor state again through `dcp.async_save`),
`load` (into another world size, compared with the state that was saved, the FSDP2 model checked by
one more step against an unsharded twin; then a second save to the same URL, which must be refused),
`die` (rank `args["die_rank"]` kills itself after writing its data object, before the commit)."""

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
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
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


def fsdp_model(mesh: Any | None) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A small MLP (sharded with FSDP2 over `mesh`, or whole when None) and its Adam optimizer, same init everywhere."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    if mesh is not None:
        for layer in (model[0], model[2], model):
            fully_shard(layer, mesh=mesh)
    return model, torch.optim.Adam(model.parameters(), lr=0.01)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    """One Adam step on a batch that is the same on every rank (so the sharded and whole models agree)."""
    batch = torch.randn(4, 8, generator=torch.Generator().manual_seed(seed))
    optimizer.zero_grad()
    model(batch).pow(2).sum().backward()
    optimizer.step()


def save_fsdp(url: str, options: dict[str, Any], mesh: Any) -> None:
    model, optimizer = fsdp_model(mesh)
    train_step(model, optimizer, 1)
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, storage_writer=StoreWriter(url, **options))


def load_and_check_fsdp(url: str, options: dict[str, Any], mesh: Any) -> None:
    """Load into a model sharded over `mesh`, step once more, and compare with an unsharded model trained alike."""
    model, optimizer = fsdp_model(mesh)
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, storage_reader=StoreReader(url, **options))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    twin, twin_optimizer = fsdp_model(None)
    for step in (1, 2):
        train_step(twin, twin_optimizer, step)
    train_step(model, optimizer, 2)  # agrees only if the Adam moments and step count came back too
    for name, expected in twin.state_dict().items():
        got = model.state_dict()[name].full_tensor()
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6), name


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
            if "fsdp_url" in args:
                save_fsdp(args["fsdp_url"], options, mesh)
            if "async_url" in args:
                dcp.async_save(sharded(full_state(), mesh), storage_writer=StoreWriter(args["async_url"], **options)).result()
        elif scenario == "load":
            loaded = zeros_like_state(mesh)
            dcp.load(loaded, storage_reader=StoreReader(url, **options))
            check_equal(loaded, full_state())
            if "fsdp_url" in args:
                load_and_check_fsdp(args["fsdp_url"], options, mesh)
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
        mp.start_processes(run_rank, args=(world, free_port(), scenario, arguments), nprocs=world, start_method="fork")
