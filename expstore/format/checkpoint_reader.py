"""Reading checkpoint objects: whole (from a writable buffer, or a private memory map of a local
file), or only the selected arrays by coalesced range reads; every array checked against its crc32c."""

from __future__ import annotations

import mmap
import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import CorruptData, KeyNotFound, PickleNotAllowed, StoreError
from .checkpoint_header import ArrayEntry, CheckpointLayout, parse_object, read_layout
from .checksum import array_crc32c
from .source import Readable
from .torch_tensors import MapLocation
from .tree import Skeleton, selected_arrays, unflatten

__all__ = [
    "check_object",
    "read_checkpoint",
    "read_manifest",
    "read_ranges",
    "read_state",
    "rebuild_tree",
    "refuse_pickle",
]

COALESCE_GAP = 256 * 1024  # select=: neighbouring ranges closer than this are read in one request


def read_manifest(store: Readable, key: str) -> dict[str, Any]:
    """Return the manifest of the checkpoint at `key` (``format``, ``version``, ``tree``, ``arrays``,
    ``extra``), reading only the 8-byte length and the header: two `read_range` requests."""
    return read_layout(store, key).manifest


def read_checkpoint(
    store: Readable,
    key: str,
    *,
    select: list[str] | str | None = None,
    allow_pickle: bool = False,
    writable: bool = True,
    map_location: MapLocation = None,
) -> tuple[Any, dict[str, Any]]:
    """Read the checkpoint at `key`; return ``(tree, manifest)``. Every array read is checked
    against its crc32c (`CorruptData` naming the URL, key and array path).

    `select` (array paths, or prefixes of them) reads only those arrays, by byte range; the others
    are left out of the tree. A checkpoint holding pickled leaves needs `allow_pickle=True`
    (else `PickleNotAllowed`, and nothing is unpickled).

    Arrays are writable by default: on a local disk they are copy-on-write views of a private
    memory map (no copy; writes never reach the file); from other stores they are views of the
    writable buffer `Store.read_buffer` returned (S3 reads into it directly). `writable=False`
    returns read-only views of `Store.read`'s bytes. Torch tensors view those arrays too (CPU), or go
    where `map_location` says, as with `torch.load`.
    """
    tree, layout = _read_tree(store, key, select, allow_pickle, writable, map_location)
    return tree, layout.manifest


def read_state(
    store: Readable,
    key: str,
    *,
    select: list[str] | str | None = None,
    allow_pickle: bool = False,
    map_location: MapLocation = None,
) -> tuple[Any, dict[str, Any]]:
    """`read_checkpoint`, returning ``(tree, manifest's extra)``: it skips parsing the manifest's
    tree and arrays tables again when this process has read the same header before."""
    tree, layout = _read_tree(store, key, select, allow_pickle, True, map_location)
    return tree, layout.extra()


def _read_tree(
    store: Readable, key: str, select: list[str] | str | None, allow_pickle: bool, writable: bool, map_location: MapLocation
) -> tuple[Any, CheckpointLayout]:
    """(tree, layout) of the checkpoint at `key`: mapped when local, else whole or by ranges."""
    local = store.local_path(key)
    if local is not None:
        layout, arrays = _read_local(store, key, local, select, allow_pickle)
        return rebuild_tree(layout, arrays, allow_pickle, store, key, map_location), layout
    if select is None:
        data = store.read_buffer(key) if writable else store.read(key)
        layout = parse_object(memoryview(data), store, key)
        refuse_pickle(layout.header.pickled, allow_pickle, store, key)
        arrays = {
            path: _make_array(data, e.begin, e, store, key, copy=writable) for path, e in layout.entries.items()
        }
    else:
        layout = read_layout(store, key)
        chosen = selected_arrays(layout.header.leaves, select)
        refuse_pickle(layout.header.pickled, allow_pickle, store, key)
        arrays = read_ranges(store, key, [layout.entries[p] for p in chosen], copy=writable)
    return rebuild_tree(layout, arrays, allow_pickle, store, key, map_location), layout


def read_ranges(store: Readable, key: str, entries: Sequence[ArrayEntry], *, copy: bool) -> dict[str, np.ndarray]:
    """The arrays of `entries` by range reads (neighbours closer than COALESCE_GAP share one request),
    each checked against its crc32c and copied out of the response if `copy`."""
    arrays = {}
    for start, group in _coalesced(entries):
        stop = max(e.end for e in group)
        blob = store.read_range(key, start, stop)
        if len(blob) != stop - start:
            raise CorruptData(
                f"truncated checkpoint: bytes [{start}, {stop}) hold only {len(blob)} bytes", url=store.url, key=key
            )
        for e in group:
            arrays[e.path] = _make_array(blob, e.begin - start, e, store, key, copy=copy)
    return arrays


def refuse_pickle(pickled: Sequence[str], allow_pickle: bool, store: Readable, key: str) -> None:
    """`PickleNotAllowed` naming the `pickled` array paths, unless there are none or `allow_pickle`."""
    if pickled and not allow_pickle:
        raise PickleNotAllowed(
            f"the checkpoint holds pickled leaves {pickled!r}; loading them can run code, "
            "pass allow_pickle=True if you trust it",
            url=store.url,
            key=key,
        )


def check_object(data: Any, store: Readable, key: str) -> CheckpointLayout:
    """Check a whole object held in memory: its header, and every array against its crc32c
    (nothing is decoded or unpickled). `CorruptData` names what is wrong; returns the layout."""
    layout = parse_object(memoryview(data), store, key)
    for e in layout.entries.values():
        _checked_bytes(data, e.begin, e, store, key)
    rebuild_tree(layout, {}, False, store, key)  # the skeleton decodes as a load decodes it (no array is built)
    return layout


def _checked_bytes(buf: Any, offset: int, e: ArrayEntry, store: Readable, key: str) -> np.ndarray:
    """The bytes of entry `e` at `offset` of `buf` (a uint8 view), checked against its crc32c."""
    nbytes = e.end - e.begin
    raw = np.frombuffer(buf, np.uint8, count=nbytes, offset=offset) if nbytes else np.empty(0, np.uint8)
    crc = array_crc32c(raw)
    if crc != e.crc:
        raise CorruptData(
            f"checksum mismatch in array {e.path!r}: crc32c {crc:#010x}, the manifest says {e.crc:#010x}",
            url=store.url,
            key=key,
        )
    return raw


def _make_array(buf: Any, offset: int, e: ArrayEntry, store: Readable, key: str, *, copy: bool) -> np.ndarray:
    """View entry `e` at `offset` of `buf`, check its crc32c, copy it out if asked."""
    raw = _checked_bytes(buf, offset, e, store, key)
    nbytes = e.end - e.begin
    if e.encoding == "pickle":
        return raw
    if not nbytes:
        return np.empty(e.shape, dtype=e.dtype)
    if copy and not raw.flags.writeable:
        # copy the bytes, not the array: numpy copies structured arrays field by field, dropping padding
        return np.ndarray(shape=e.shape, dtype=e.dtype, buffer=raw.copy())
    return np.ndarray(shape=e.shape, dtype=e.dtype, buffer=buf, offset=offset)


class _Unpickling(Exception):
    """Carries an error raised by `pickle.loads` past `rebuild_tree`'s handling of malformed skeletons."""


def rebuild_tree(
    layout: CheckpointLayout,
    arrays: dict[str, np.ndarray],
    allow_pickle: bool,
    store: Readable,
    key: str,
    map_location: MapLocation = None,
) -> Any:
    """The tree of `layout` from the `arrays` read (others left out), unpickling only with `allow_pickle`,
    tensors placed by `map_location`; `CorruptData` when the skeleton does not decode."""

    def load_pickle(node: Skeleton, found: Mapping[str, Any]) -> Any:
        if node.get("t") != "pickle" or (node["path"] in found and not allow_pickle):  # never unpickle without opt-in
            raise ValueError(f"unexpected node {node.get('t')!r}")
        if node["path"] not in found:  # a pickled root that was not read (check_object decodes no array)
            return None
        try:
            return pickle.loads(found[node["path"]])
        except Exception as exc:
            raise _Unpickling(node["path"]) from exc

    try:
        return unflatten(layout.header.skeleton, arrays, fallback=load_pickle, map_location=map_location)
    except _Unpickling as wrapped:
        raise wrapped.__cause__ from None  # type: ignore[misc]
    except (KeyError, ValueError, TypeError, IndexError, OverflowError, RecursionError) as exc:
        raise CorruptData(f"the tree skeleton is malformed: {type(exc).__name__}: {exc}", url=store.url, key=key) from None


def _coalesced(entries: Sequence[ArrayEntry]) -> list[tuple[int, list[ArrayEntry]]]:
    """Group entries into read requests: neighbours closer than COALESCE_GAP share one request."""
    groups: list[tuple[int, list[ArrayEntry]]] = []
    stop = -1
    for e in sorted(entries, key=lambda e: e.begin):
        if groups and e.begin - stop <= COALESCE_GAP:
            groups[-1][1].append(e)
            stop = max(stop, e.end)
        else:
            groups.append((e.begin, [e]))
            stop = e.end
    return groups


# ---- local files: a private memory map ----------------------------------------------------------


def _read_local(
    store: Readable, key: str, path: str, select: list[str] | str | None, allow_pickle: bool
) -> tuple[CheckpointLayout, dict[str, np.ndarray]]:
    """The layout and the (selected) arrays of the local file at `path`: views of a private memory map."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise CorruptData(f"truncated checkpoint: {size} bytes, less than the 8-byte header length", url=store.url, key=key)
            # MAP_PRIVATE: arrays are writable copy-on-write views; writes never reach the file.
            mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise KeyNotFound("no value at this key", url=store.url, key=key) from None
    except OSError as exc:
        raise StoreError(f"read failed: {exc}", url=store.url, key=key) from exc
    layout = parse_object(memoryview(mapped), store, key)
    chosen = list(layout.entries) if select is None else selected_arrays(layout.header.leaves, select)
    refuse_pickle(layout.header.pickled, allow_pickle, store, key)
    if select is None and hasattr(mmap, "MADV_WILLNEED"):
        mapped.madvise(mmap.MADV_WILLNEED)
    return layout, {p: _make_array(mapped, layout.entries[p].begin, layout.entries[p], store, key, copy=False) for p in chosen}
