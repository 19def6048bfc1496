"""The free sections of an HDF5 file's committed state, read through the HDF5 C library h5py uses.

A file created with a persistent free-space map (`file_access.CREATE_OPTIONS`) remembers the space
that deletes and rewrites freed. No committed metadata points into those sections, so the journal
may let a new value's bytes go straight to disk there, as it does past the committed end: a
rewrite then writes its data once and the file stays about two versions large.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import h5py

__all__ = ["free_sections"]

H5FD_MEM_DEFAULT = 0  # every allocation type


class _SectInfo(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint64), ("size", ctypes.c_uint64)]


@functools.cache
def _get_free_sections() -> Any:
    """`H5Fget_free_sections` of the HDF5 library loaded by h5py (None if it cannot be found:
    then no free section is known and rewrites go through the journal, slower but as safe)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libhdf5" in line and "libhdf5_hl" not in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            function = ctypes.CDLL(path).H5Fget_free_sections
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_ssize_t
        function.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p]
        return function
    return None


def free_sections(path: str) -> list[tuple[int, int]]:
    """(offset, length) of every free section the committed file at `path` records, sorted.

    Read from a read-only open: one opened to write may already count its own free-space map's
    blocks, which committed metadata still names, as free. The caller holds the file's lock."""
    function = _get_free_sections()
    if function is None:
        return []
    with h5py.File(path, "r", locking=False) as h5:
        count = function(h5.id.id, H5FD_MEM_DEFAULT, 0, None)
        if count <= 0:
            return []
        sections = (_SectInfo * count)()
        count = function(h5.id.id, H5FD_MEM_DEFAULT, count, sections)
        return sorted((s.addr, s.size) for s in sections[: max(count, 0)])
