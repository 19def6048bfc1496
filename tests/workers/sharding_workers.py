"""Code that the many-writer and sharding tests run in separate processes (importable under spawn)."""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np

from expstore.checkpointing import CheckpointManager


def tag_of(iteration: int) -> str | None:
    """The tag the retention tests pin some iterations with."""
    return "at_threshold" if iteration % 37 == 0 else None


def save_many(url: str, options: dict[str, Any], experiment: str, iterations: list[int], keep_last_n: int | None) -> int:
    """Save one small checkpoint per iteration (tagging by `tag_of`) into the shared history; return the count."""
    with CheckpointManager(url, experiment, keep_last_n=keep_last_n, **options) as manager:
        for it in iterations:
            manager.save_checkpoint({"w": np.full(4, it, np.int64)}, it, {"by": os.getpid()}, tag=tag_of(it))
    return len(iterations)


ROWS, COLS = 1003, 64  # a global array of ~0.5 MiB, split unevenly along axis 0


def global_array(iteration: int) -> np.ndarray:
    """The full array every test rank holds a slice of, different per iteration."""
    return np.arange(ROWS * COLS, dtype=np.float64).reshape(ROWS, COLS) + iteration * 1e6


def rank_state(iteration: int, rank: int, world_size: int) -> dict[str, Any]:
    """Rank `rank`'s state: its rows of `global_array`, a replicated leaf and a rank-private one."""
    from expstore.checkpointing import ShardedArray

    lo, hi = ROWS * rank // world_size, ROWS * (rank + 1) // world_size
    return {
        "model": {"w": ShardedArray(global_array(iteration)[lo:hi], (ROWS, COLS), lo)},
        "step": iteration,
        "rng": np.full(2, rank, np.int64),
    }


def save_rank(
    url: str, options: dict[str, Any], experiment: str, rank: int, world_size: int, iterations: list[int],
    keep_last_n: int | None = None, block_bytes: int | None = None,
) -> list[str]:
    """Save rank `rank`'s shard of each iteration; return the refs."""
    from expstore.checkpointing import sharded as sharding

    default = sharding.BLOCK_BYTES
    sharding.BLOCK_BYTES = block_bytes or default  # pool processes are reused: restore it below
    try:
        with CheckpointManager(url, experiment, keep_last_n=keep_last_n, rank=rank, world_size=world_size, **options) as m:
            return [m.save_checkpoint(rank_state(it, rank, world_size), it, {"loss": 1.0 / it}) for it in iterations]
    finally:
        sharding.BLOCK_BYTES = default


def save_then_hang(
    url: str, options: dict[str, Any], experiment: str, rank: int, world_size: int, iterations: list[int], hang_at: int,
    ready: Any,
) -> None:
    """Save `iterations` as rank `rank`, but at `hang_at` set `ready` and block before writing the shard (to be killed)."""
    with CheckpointManager(url, experiment, keep_last_n=None, rank=rank, world_size=world_size, **options) as m:
        for it in iterations:
            if it == hang_at:
                ready.set()
                signal.pause()
            m.save_checkpoint(rank_state(it, rank, world_size), it)
