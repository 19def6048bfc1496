"""Runs written the way users write them (logger + checkpoint manager, the demo's layout) for the dashboard tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from expstore.checkpointing import CheckpointManager
from expstore.experiment_logger import ExperimentLogger

HOSTILE_NAME = "<img src=x onerror=alert(1)>"


def write_run(root: str, name: str, *, steps: int = 20, config: dict[str, Any] | None = None, checkpoints: int = 0,
              status: str = "completed", **storage_options: Any) -> str:
    """A finished run `name` under `root` (``<name>/logs``, ``<name>/checkpoints``); returns its run id."""
    base = root.rstrip("/")
    logger = ExperimentLogger(name, f"{base}/{name}/logs", log_to_console=False, **storage_options)
    logger.log_config(config or {"lr": 0.01, "optimizer": "sgd"})
    for step in range(1, steps + 1):
        logger.log_metrics({"loss": 1.0 / step, "acc": step / steps}, step=step)
    with CheckpointManager(f"{base}/{name}/checkpoints", name, keep_last_n=None, save_frequency=1, **storage_options) as manager:
        for i in range(1, checkpoints + 1):
            manager.save_checkpoint({"w": np.full(1000, float(i))}, iteration=i * 10, metadata={"loss": 1.0 / i})
            logger.log_checkpoint({"iteration": i * 10})
    logger.finalize(status)
    return f"{name}/logs/{name}"
