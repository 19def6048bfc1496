"""Writers the same-iteration race test runs in separate processes (importable under spawn)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from expstore.checkpointing import CheckpointManager


def save_same_iterations(url: str, options: dict[str, Any], iterations: list[int]) -> str:
    """Save every iteration of `iterations`, state and metadata both naming this process; return its name."""
    me = f"writer-{os.getpid()}"
    with CheckpointManager(url, "same", keep_last_n=None, **options) as manager:
        for it in iterations:
            manager.save_checkpoint({"by": me, "w": np.full(64, it, np.int64)}, it, {"by": me})
    return me
