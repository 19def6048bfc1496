"""The writer tests/checkpointing/test_checkpoint_crash.py kills: `python -m tests.workers.checkpoint_crash_worker URL`.

It imports everything (so the test can start it early, while it still checks the previous run),
then waits for a line on stdin before it touches the store: the test holds the store open until
then (HDF5 allows one process per file). Then it opens ``CheckpointManager(URL, "exp",
keep_last_n=3, save_frequency=1)``, resumes after the highest iteration `list_checkpoints()` names
(or at 1), prints ``ready <first iteration>`` and saves checkpoints forever, printing
``saving <iteration>`` before each `save_checkpoint` and ``committed <iteration>`` after it
returns (both flushed). The test kills it with SIGKILL.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import numpy as np

from expstore.checkpointing import CheckpointManager

EXPERIMENT = "exp"
KEEP_LAST_N = 3
ARRAYS = 3
ELEMENTS = 2**19  # float32: 2 MiB per array, 6 MiB per checkpoint
TAG_EVERY = 10  # every 10th iteration is tagged, which pins it against retention
TAG = "milestone"


def state_for(iteration: int) -> dict[str, Any]:
    """The state saved at `iteration`; every value derives from it, so a reader can check it exactly."""
    base = np.arange(ELEMENTS, dtype=np.int64)
    return {
        "model": {f"w{j}": ((base * (j + 3) + iteration * 7919) % 1_000_003).astype(np.float32) for j in range(ARRAYS)},
        "optimizer": {"step": np.array(iteration, dtype=np.int64), "lr": np.float64(1.0 / iteration)},
    }


def metadata_for(iteration: int) -> dict[str, Any]:
    return {"loss": 1.0 / iteration, "iteration": iteration}


def tag_for(iteration: int) -> str | None:
    return TAG if iteration % TAG_EVERY == 0 else None


def main(url: str) -> None:
    if sys.stdin.readline() != "go\n":
        raise SystemExit("expected 'go' on stdin")
    manager = CheckpointManager(url, EXPERIMENT, keep_last_n=KEEP_LAST_N, save_frequency=1)
    listed = manager.list_checkpoints()
    iteration = listed[-1]["iteration"] + 1 if listed else 1
    print(f"ready {iteration}", flush=True)
    while True:
        state = state_for(iteration)
        print(f"saving {iteration}", flush=True)
        manager.save_checkpoint(state, iteration, metadata_for(iteration), tag=tag_for(iteration))
        print(f"committed {iteration}", flush=True)
        iteration += 1


if __name__ == "__main__":
    target = sys.argv[1]
    # Import the backend now, before waiting for "go", so its import cost (Zarr: ~0.5 s) overlaps the test's checks.
    for suffix, backend in ((".h5", "hdf5"), (".zarr", "zarr")):
        if suffix in target:
            importlib.import_module(f"expstore.backends.{backend}")
    main(target)
