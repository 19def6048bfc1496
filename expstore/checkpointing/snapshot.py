"""Host-memory snapshots of a state for async saves, into buffers reused from one save to the next.

Copying a 256 MiB state into fresh memory costs page faults on every page, often more than the
copy itself; a snapshot that reuses the previous save's buffers (same path, shape and dtype) pays
only the copy. The pool holds one copy of the state's arrays for the manager's lifetime.

The copy is the time an async save blocks its caller. One core does not saturate the memory bus
(here 256 MiB took 26 ms on one thread, 15 ms on two), so big states are copied in pieces by a
few threads; numpy releases the GIL while it copies.
"""

from __future__ import annotations

import copy
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .tensor_snapshot import TensorBuffers, tensors_in

__all__ = ["SnapshotPool"]

PIECE_BYTES = 16 * 2**20  # one copy task
PARALLEL_FROM = 4 * PIECE_BYTES  # smaller states are copied by the caller's thread alone
MAX_COPY_THREADS = 4


class SnapshotPool:
    """Copies states so the caller may mutate theirs while a background thread writes the copy.

    Only one snapshot may be in use at a time: `take` reuses the buffers of the previous one.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}
        self._tensor_buffers = TensorBuffers()

    def take(self, state: Any) -> Any:
        """A deep copy of `state`; its numpy arrays and torch tensors land in pooled buffers, the rest
        via `copy.deepcopy`."""
        memo: dict[int, Any] = {}
        used: dict[str, np.ndarray] = {}
        copies: list[tuple[np.ndarray, np.ndarray]] = []
        for path, array in _arrays(state, ""):
            if id(array) in memo:
                continue  # the same array twice in the tree: one copy, shared like the original
            if array.dtype.hasobject:
                continue  # left to deepcopy: its elements are Python objects
            buffer = self._buffers.pop(path, None)  # popped: two paths that print alike never share one
            if buffer is None or buffer.shape != array.shape or buffer.dtype != array.dtype:
                buffer = np.empty_like(array, order="C")
            copies.append((buffer, array))
            memo[id(array)] = used[path] = buffer
        tensors = tensors_in(state)
        if tensors:
            memo.update(self._tensor_buffers.take(tensors, copies))
        _copy_all(copies)
        self._buffers = used
        return copy.deepcopy(state, memo)


def _copy_all(copies: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """`np.copyto(buffer, array)` for each pair; big totals in pieces on a few threads."""
    if sum(array.nbytes for _, array in copies) < PARALLEL_FROM or _threads() < 2:
        for buffer, array in copies:
            np.copyto(buffer, array, casting="no")
        return
    tasks = []
    for buffer, array in copies:
        if not array.flags.c_contiguous or array.nbytes <= PIECE_BYTES:
            tasks.append((buffer, array))
            continue
        dst, src = buffer.reshape(-1).view(np.uint8), array.reshape(-1).view(np.uint8)
        tasks += [(dst[i : i + PIECE_BYTES], src[i : i + PIECE_BYTES]) for i in range(0, len(src), PIECE_BYTES)]
    list(_copier().map(lambda task: np.copyto(task[0], task[1], casting="no"), tasks))  # re-raises a task's error


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _threads() -> int:
    return min(MAX_COPY_THREADS, os.cpu_count() or 1)


def _copier() -> ThreadPoolExecutor:
    """The process's copy threads, started on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_threads(), thread_name_prefix="expstore-snapshot")
        return _pool


def _forget_pool() -> None:
    """In a forked child: the inherited pool has no threads (its tasks would never run) and the lock
    may have been held by a thread that is not there either; start both afresh."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _arrays(node: Any, path: str) -> list[tuple[str, np.ndarray]]:
    """(path, array) of every numpy array reachable through dicts, lists and tuples."""
    if type(node) is np.ndarray:
        return [(path, node)]
    if isinstance(node, dict):
        return [found for k, v in node.items() for found in _arrays(v, f"{path}/{k}")]
    if isinstance(node, (list, tuple)):
        return [found for i, v in enumerate(node) for found in _arrays(v, f"{path}/{i}")]
    return []
