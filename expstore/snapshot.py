"""Host-memory snapshots of a state for async saves, into buffers reused from one save to the next.

Copying a 256 MiB state into fresh memory costs page faults on every page, often more than the
copy itself; a snapshot that reuses the previous save's buffers (same path, shape and dtype) pays
only the copy. The pool holds one copy of the state's arrays for the manager's lifetime.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np


class SnapshotPool:
    """Copies states so the caller may mutate theirs while a background thread writes the copy.

    Only one snapshot may be in use at a time: `take` reuses the buffers of the previous one.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def take(self, state: Any) -> Any:
        """A deep copy of `state`; its numpy arrays land in pooled buffers, the rest via `copy.deepcopy`."""
        memo: dict[int, Any] = {}
        used: dict[str, np.ndarray] = {}
        for path, array in _arrays(state, ""):
            if id(array) in memo:
                continue  # the same array twice in the tree: one copy, shared like the original
            if array.dtype.hasobject:
                continue  # left to deepcopy: its elements are Python objects
            buffer = self._buffers.pop(path, None)  # popped: two paths that print alike never share one
            if buffer is None or buffer.shape != array.shape or buffer.dtype != array.dtype:
                buffer = np.empty_like(array, order="C")
            np.copyto(buffer, array, casting="no")
            memo[id(array)] = used[path] = buffer
        self._buffers = used
        return copy.deepcopy(state, memo)


def _arrays(node: Any, path: str) -> list[tuple[str, np.ndarray]]:
    """(path, array) of every numpy array reachable through dicts, lists and tuples."""
    if type(node) is np.ndarray:
        return [(path, node)]
    if isinstance(node, dict):
        return [found for k, v in node.items() for found in _arrays(v, f"{path}/{k}")]
    if isinstance(node, (list, tuple)):
        return [found for i, v in enumerate(node) for found in _arrays(v, f"{path}/{i}")]
    return []
