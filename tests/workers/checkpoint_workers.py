"""Code that checkpointing tests run in separate processes (importable under the spawn start method)."""

from __future__ import annotations

from typing import Any

import numpy as np

from expstore.checkpointing import CheckpointManager


def save_iterations(url: str, options: dict[str, Any], experiment: str, iterations: list[int]) -> list[str]:
    """Save one small checkpoint per iteration into the shared directory; return the refs."""
    manager = CheckpointManager(url, experiment, keep_last_n=None, **options)
    return [manager.save_checkpoint({"w": np.full(4, it, np.int64)}, it, {"by": "worker"}) for it in iterations]


def train_until_signalled(url: str, experiment: str) -> None:
    """Train forever under AutoCheckpoint; print "ready" once the handlers are installed."""
    import time

    from expstore.checkpointing import AutoCheckpoint

    manager = CheckpointManager(url, experiment, keep_last_n=None)
    progress = {"iteration": 0}
    with AutoCheckpoint(manager, lambda: ({"w": np.full(2, progress["iteration"])}, progress["iteration"])):
        print("ready", flush=True)
        while True:
            progress["iteration"] += 1
            time.sleep(0.001)


if __name__ == "__main__":
    import sys

    train_until_signalled(sys.argv[1], sys.argv[2])
