"""What the checkpoint codec needs of a store, as protocols: `expstore.store.Store` meets them by
shape, so the format layer reads and writes bytes without importing the store layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["Readable", "Writable"]


class Readable(Protocol):
    """A keyed source of bytes the codec reads checkpoint objects from; `url` names it in errors."""

    url: str

    def read(self, key: str) -> bytes:
        """The whole value at `key`."""
        ...

    def read_range(self, key: str, start: int, end: int | None = None) -> bytes:
        """Bytes `[start, end)` of the value at `key`, clamped to its size like a slice."""
        ...

    def read_buffer(self, key: str) -> np.ndarray:
        """The whole value at `key` as a writable uint8 array the caller owns."""
        ...

    def local_path(self, key: str) -> str | None:
        """The path of a plain local file holding the value, to memory-map it; None if there is none."""
        ...


class Writable(Protocol):
    """A keyed sink the codec writes one checkpoint object to, as buffers stored back to back."""

    url: str

    def write(self, key: str, data: Sequence[bytes | memoryview]) -> str:
        """Atomically store the buffers of `data` back to back at `key`; return the version token."""
        ...
