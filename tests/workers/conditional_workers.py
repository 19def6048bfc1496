"""Processes for the tests of stores without conditional writes (spawned: top-level functions only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from expstore import StoreError
from expstore.checkpointing import CheckpointManager


def try_saves(url: str, options: dict[str, Any], iterations: list[int]) -> tuple[list[int], list[str]]:
    """Save each iteration into experiment "race"; return the iterations saved and the refusals' messages."""
    saved, refused = [], []
    with CheckpointManager(url, "race", keep_last_n=None, **options) as manager:
        for it in iterations:
            try:
                manager.save_checkpoint({"w": np.full(4, it, np.int64)}, it)
                saved.append(it)
            except StoreError as exc:
                refused.append(str(exc))
    return saved, refused


def save_alone(url: str, options: dict[str, Any], iterations: list[int]) -> int:
    """The one writer of experiment "alone" (single_writer=True), with metadata that makes the index large."""
    with CheckpointManager(url, "alone", keep_last_n=None, single_writer=True, **options) as manager:
        for it in iterations:
            manager.save_checkpoint({"w": np.full(4, it, np.int64)}, it, {"note": "x" * 2000})
    return len(iterations)
