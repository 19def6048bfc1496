"""crc32c of an array's bytes, the one checksum every store keeps beside each stored array."""

from __future__ import annotations

import google_crc32c
import numpy as np

from ..errors import CorruptData

__all__ = ["CRC32C_ATTRIBUTE", "array_crc32c", "check_array_crc32c"]

CRC32C_ATTRIBUTE = "expstore_crc32c"


def array_crc32c(array: np.ndarray) -> int:
    """crc32c of the array's bytes in C order (0 for an empty array); copies only a non-contiguous input."""
    if not array.nbytes:
        return 0
    raw = np.ascontiguousarray(array).reshape(-1).view(np.uint8).view()
    raw.flags.writeable = False  # google_crc32c takes read-only buffers without a copy
    return google_crc32c.value(raw)


def check_array_crc32c(array: np.ndarray, expected: int, *, url: str, key: str, path: str) -> None:
    """Raise `CorruptData` naming the array `path` of the value at `key` when its bytes no longer match."""
    found = array_crc32c(array)
    if found != expected:
        raise CorruptData(f"checksum mismatch in array {path!r}: crc32c {found:#010x}, stored {expected:#010x}", url=url, key=key)
