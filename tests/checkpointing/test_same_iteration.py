"""Two processes saving the same iterations: every index entry describes the object it names."""

from __future__ import annotations

import multiprocessing
import uuid
from typing import Any

import pytest

from expstore.checkpointing import CheckpointManager

from ..workers.same_iteration_workers import save_same_iterations

ITERATIONS = list(range(1, 31))


def race(url: str, options: dict[str, Any]) -> None:
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        writers = pool.starmap(save_same_iterations, [(url, options, ITERATIONS)] * 2)
    with CheckpointManager(url, "same", keep_last_n=None, **options) as m:
        listed = m.list_checkpoints()
        assert [c["iteration"] for c in listed] == ITERATIONS
        mismatched = []
        for entry in listed:
            loaded = m.load_checkpoint(entry)
            assert loaded["metadata"]["by"] == loaded["state"]["by"] and loaded["state"]["by"] in writers
            if entry["metadata"]["by"] != loaded["state"]["by"]:
                mismatched.append(entry["iteration"])
        assert mismatched == [], f"index metadata of iterations {mismatched} names the other writer's state"
        assert m.verify() == []


def test_same_iteration_from_two_processes_local(tmp_path):
    race(str(tmp_path / "ckpt"), {})


# SeaweedFS, not moto: moto's conditional PUT checks its condition and then stores the object with no
# lock across its request threads, so both writers' index swaps can pass (docs/decisions.md).
@pytest.mark.s3
def test_same_iteration_from_two_processes_s3(seaweedfs_server):
    race(f"s3://expstore-test/same-{uuid.uuid4().hex[:8]}", seaweedfs_server.storage_options)
