"""JournaledFile: a random-access file with atomic commit points, for h5py's file-object driver.

Writes past the last committed end, and into free sections the caller names (space no committed
state references), go straight to disk; writes over other committed bytes, and truncations below the committed end, stay in memory
until `commit()`, which makes them durable in `<file>.journal` (temp file, fsync, rename) before
applying them. `recover()` replays a verified journal after a crash and discards a torn one.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import os
import struct
from collections.abc import Sequence
from typing import Any

import google_crc32c

from ..posix import fsync_path, new_file_beside

__all__ = ["JournaledFile", "recover"]

# Version 2 ends with a crc32c of everything before it (~10 GB/s; it only has to catch a journal
# torn by a crash). Version 1, written by earlier expstore, ended with a sha256 (~1.2 GB/s, which
# cost 0.2 s per 256 MiB committed); it is still replayed.
JOURNAL_MAGIC = b"EXPSTORE-HDF5-JOURNAL-2\n"
_DIGESTS = {  # magic -> (digest length, digest function)
    JOURNAL_MAGIC: (4, lambda body: google_crc32c.value(body).to_bytes(4, "little")),
    b"EXPSTORE-HDF5-JOURNAL-1\n": (32, lambda body: hashlib.sha256(body).digest()),
}
_HEADER = struct.Struct("<QQQQ")  # new size, zero-from, zero-to, number of extents
_EXTENT = struct.Struct("<QQB")  # offset, length, 1 = literal bytes follow / 0 = zeros
_IO_PIECE = 16 * 2**20

class JournaledFile:
    """A file object for h5py's `fileobj` driver with commit points.

    Bytes in `[0, committed_size)` are the state of the last commit; writes there (and
    truncations below it) stay in memory until `commit()`. Writes at or past `committed_size`
    go straight to the file: no committed metadata points at them. So do writes that lie wholly
    inside one of the `free` (offset, length) sections, sorted, which committed state leaves unused.
    """

    def __init__(self, fd: int, path: str, free: Sequence[tuple[int, int]] = ()):
        self.fd = fd
        self.path = path
        self.committed_size = os.fstat(fd).st_size
        self.free = list(free)
        self._free_starts = [offset for offset, _ in self.free]
        self._reset()

    def _reset(self) -> None:
        self.size = self.committed_size  # the logical size h5py sees
        self.zero_from = self.committed_size  # [zero_from, committed_size) reads as zeros (truncated away)
        self.overlay: dict[int, bytes] = {}  # offset -> bytes; later (insertion order) extents win
        self.pos = 0

    # -- the file-object protocol h5py's driver uses: seek, tell, read(into), write, truncate, flush

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            self.pos = offset
        elif whence == os.SEEK_CUR:
            self.pos += offset
        else:
            self.pos = self.size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = max(0, self.size - self.pos) if n is None or n < 0 else n
        buf = bytearray(n)
        got = self.readinto(buf)
        return bytes(buf[:got])

    def readinto(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        start = self.pos
        end = min(start + len(view), self.size)
        if end <= start:
            return 0
        view = view[: end - start]
        got = os.preadv(self.fd, [view], start)  # committed bytes, then what went straight past them
        if got < len(view):
            view[got:] = bytes(len(view) - got)
        lo, hi = max(start, self.zero_from), min(end, self.committed_size)
        if lo < hi:
            view[lo - start : hi - start] = bytes(hi - lo)
        for off, data in self.overlay.items():
            a, b = max(start, off), min(end, off + len(data))
            if a < b:
                view[a - start : b - start] = data[a - off : b - off]
        self.pos = end
        return end - start

    def write(self, buf: Any) -> int:
        view = memoryview(buf).cast("B")
        start, end = self.pos, self.pos + len(view)
        split = min(max(self.committed_size, start), end)
        if split > start and self._unused(start, split):
            split = start
        if split > start:  # over committed bytes: keep in memory until commit
            self._add_extent(start, bytes(view[: split - start]))
        if end > split:
            _pwrite_all(self.fd, view[split - start :], split)
        self.size = max(self.size, end)
        self.pos = end
        return len(view)

    def _unused(self, start: int, end: int) -> bool:
        """Whether committed state leaves `[start, end)` unused (inside one free section, not
        truncated away) and no pending extent overlaps it, so it may be written in place now."""
        i = bisect.bisect_right(self._free_starts, start) - 1
        if i < 0 or end > self.free[i][0] + self.free[i][1] or end > self.zero_from:
            return False
        return not any(off < end and start < off + len(data) for off, data in self.overlay.items())

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        if size < self.committed_size:
            self.zero_from = min(self.zero_from, size)
            if os.fstat(self.fd).st_size > self.committed_size:
                os.ftruncate(self.fd, self.committed_size)
        else:
            os.ftruncate(self.fd, size)
        self.overlay = {off: data[: size - off] for off, data in self.overlay.items() if off < size}
        self.size = size
        return size

    def flush(self) -> None:
        """HDF5's flush: nothing to do, durability comes with `commit()`."""

    def close(self) -> None:
        """The store closes the descriptor itself (after the final commit)."""

    # -- commits

    @property
    def dirty(self) -> bool:
        return bool(self.overlay) or self.zero_from < self.committed_size or self.size != self.committed_size

    def commit(self) -> None:
        """Make everything written so far the new committed state, atomically."""
        if not self.dirty:
            return
        os.fsync(self.fd)  # bytes written past the committed end are durable before anything names them
        extents = self._journal_extents()
        journal = self.path + ".journal"
        header = JOURNAL_MAGIC + _HEADER.pack(self.size, self.zero_from, self.committed_size, len(extents))
        chunks: list[bytes | memoryview] = [header]
        for off, length, data in extents:
            chunks.append(_EXTENT.pack(off, length, 0 if data is None else 1))
            if data is not None:
                chunks.append(data)
        crc = 0
        for chunk in chunks:
            crc = google_crc32c.extend(crc, chunk)
        chunks.append(crc.to_bytes(4, "little"))
        with new_file_beside(journal, os.path.basename(journal) + ".tmp") as pending:
            pending.write(chunks)
            pending.replace()
        _apply(self.fd, self.size, extents)
        os.unlink(journal)  # a stale journal left by a power cut is still the latest commit: replay is idempotent
        self.committed_size = self.size
        self.free, self._free_starts = [], []  # the commit may have put data into them
        self._reset()

    def rollback(self) -> None:
        """Forget everything since the last commit (what went into free sections stays unused)."""
        os.ftruncate(self.fd, self.committed_size)
        self._reset()

    def _add_extent(self, off: int, data: bytes) -> None:
        old = self.overlay.pop(off, None)  # HDF5 rewrites metadata in place: same offset, same length
        if old is not None and len(old) > len(data):
            data = data + old[len(data) :]
        self.overlay[off] = data

    def _journal_extents(self) -> list[tuple[int, int, bytes | None]]:
        """Overlay extents plus zero extents for the truncated-away gaps they do not cover."""
        extents: list[tuple[int, int, bytes | None]] = []
        lo, hi = self.zero_from, min(self.committed_size, self.size)
        if lo < hi:
            covered = sorted((off, off + len(data)) for off, data in self.overlay.items())
            cursor = lo
            for a, b in covered:
                if a > cursor and cursor < hi:
                    extents.append((cursor, min(a, hi) - cursor, None))
                cursor = max(cursor, b)
            if cursor < hi:
                extents.append((cursor, hi - cursor, None))
        extents.extend((off, len(data), data) for off, data in self.overlay.items())
        return extents


def _apply(fd: int, size: int, extents: list[tuple[int, int, Any]]) -> None:
    """Write the extents (zeros where data is None), set the size, fsync. Idempotent."""
    for off, length, data in extents:
        if data is None:
            for piece in range(0, length, _IO_PIECE):
                _pwrite_all(fd, bytes(min(_IO_PIECE, length - piece)), off + piece)
        else:
            _pwrite_all(fd, data, off)
    if os.fstat(fd).st_size != size:
        os.ftruncate(fd, size)
    os.fsync(fd)


def recover(fd: int, path: str) -> str | None:
    """Replay `<path>.journal` if it is complete, discard it otherwise; returns what happened."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path + ".journal.tmp")
    journal = path + ".journal"
    try:
        with open(journal, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        return None
    parsed = _parse_journal(blob)
    if parsed is None:
        os.unlink(journal)
        fsync_path(os.path.dirname(path))
        return "discarded"
    size, extents = parsed
    _apply(fd, size, extents)
    os.unlink(journal)
    fsync_path(os.path.dirname(path))
    return "replayed"


def _parse_journal(blob: bytes) -> tuple[int, list[tuple[int, int, Any]]] | None:
    magic = blob[: len(JOURNAL_MAGIC)]
    if magic not in _DIGESTS:
        return None
    digest_size, digest_of = _DIGESTS[magic]
    if len(blob) < len(magic) + _HEADER.size + digest_size:
        return None
    body, digest = blob[:-digest_size], blob[-digest_size:]
    if digest_of(body) != digest:
        return None
    view = memoryview(body)
    pos = len(magic)
    size, _, _, count = _HEADER.unpack_from(view, pos)
    pos += _HEADER.size
    extents = []
    for _ in range(count):
        if pos + _EXTENT.size > len(view):
            return None
        off, length, literal = _EXTENT.unpack_from(view, pos)
        pos += _EXTENT.size
        if literal:
            if pos + length > len(view):
                return None
            extents.append((off, length, view[pos : pos + length]))
            pos += length
        else:
            extents.append((off, length, None))
    return (size, extents) if pos == len(view) else None


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view[:_IO_PIECE], offset)
        view, offset = view[n:], offset + n
