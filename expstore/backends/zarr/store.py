"""ZarrStore: one Zarr v3 hierarchy per store, on local disk, in memory or on S3 (zarr's own storage classes).

Layout (the root stays a Zarr group that `zarr.open_group` reads):

    <root>/zarr.json                      the root group
    <root>/runs/zarr.json                 an intermediate key segment: a plain group
    <root>/runs/k/zarr.json               expstore key `runs/k`: a group whose attributes are the
                                          pointer {"expstore": {"kind", "live", "size"}}
    <root>/runs/k/v-<token>               bytes: a 1-D uint8 array
    <root>/runs/k/v-<token>/model/w       tree: a group (attributes: skeleton and dtypes) holding
                                          every array of the tree at its path

Zarr has no rename, so a write commits by switching a pointer: it writes the new child
`v-<token>` completely, then rewrites the key's `zarr.json` (one atomic key write: temp file +
fsync + rename locally, one PUT on S3, one dict set in memory), then deletes the child it
replaced. Readers follow the pointer and check after reading that it still names the same child,
so a concurrent overwrite can never hand them a torn value. A crash leaves at worst an orphan
child that no pointer names: hidden from every read, and deleted by the next write of that key
(or by `reclaim()`, for every key) once no writer can still be writing it. Locally a writer holds
a shared `flock` on its child folder until the switch, so a child that can be locked (and is older
than `SETTLE_SECONDS`) is an orphan; in memory the process knows its writes in flight; on S3,
where nothing shows a dead writer, a child older than `ORPHAN_GRACE_SECONDS` (1 h) is an orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zarr.api.asynchronous as zasync
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore

from ...errors import CorruptData, InvalidURL, KeyNotFound, PreconditionFailed, StoreError
from ...format.tree import Skeleton, array_paths, dtype_description, select_paths, unflatten
from ...store.base import Store
from ...store.keys import RESERVED_PREFIX
from ..posix import fsync_path, fsync_tree
from .arrays import PASSTHROUGH, check_bytes, open_array, read_arrays, read_selection, write_array, write_arrays

T = TypeVar("T")

ATTR = "expstore"  # the attribute of a key's group that makes it an expstore key (the pointer)
TREE_ATTR = "expstore_tree"  # the attribute of a tree child: skeleton and exact dtypes
META = "zarr.json"
CHILD_PREFIX = "v-"
BYTES_CHUNK = 4 * 2**20  # chunk length of a bytes value: read_range reads only the chunks it needs
ORPHAN_GRACE_SECONDS = 3600.0  # S3: a child no pointer names is reclaimed by a write once this old
SETTLE_SECONDS = 5.0  # local: an unlocked child no pointer names is an orphan once this old
READ_ATTEMPTS = 8  # a read retries when a concurrent write moved the pointer while it read
# Measured (see docs/decisions.md): zstd halves write throughput of float data, so no compression by default.
DEFAULT_COMPRESSORS: Any = None
ARRAY_OPTIONS = {"compressors", "filters", "serializer", "chunks", "shards", "config"}
_TEMP_SUFFIX = ".expstore-tmp"
_ZARR_TEMP_SUFFIX = ".partial"  # zarr's LocalStore writes `zarr.<uuid>.partial`, then renames it

_MEMORY_STORES: dict[str, dict[str, Any]] = {}  # zarr+memory://name -> the dict every store of that name shares
_MEMORY_LOCK = threading.Lock()
_MEMORY_SWITCH: list[asyncio.Lock] = []
_IN_FLIGHT: set[tuple[str, str]] = set()  # (memory store, child) of every write in flight


def _memory_switch_lock() -> asyncio.Lock:
    with _MEMORY_LOCK:
        if not _MEMORY_SWITCH:
            _MEMORY_SWITCH.append(asyncio.Lock())
        return _MEMORY_SWITCH[0]


class ZarrStore(Store):
    """An expstore Store on one Zarr v3 hierarchy; subclasses say how the pointer switch is made exact."""

    supports_arrays = True
    supports_append = False
    supports_conditional_writes = True

    _passthrough = PASSTHROUGH  # errors of a read that are the transport's, not damage

    def __init__(self, zstore: Any, url: str, where: str, array_options: dict[str, Any]):
        self.zstore = zstore
        self.where = where  # the path or bucket/prefix, for messages
        self.array_options = {"compressors": DEFAULT_COMPRESSORS, **array_options}
        self._root_checked = False
        self._groups: set[str] = set()  # intermediate groups known to exist (never deleted by expstore)
        super().__init__(url)

    # ---- plumbing ---------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], key: str | None = None) -> T:
        """Run a coroutine on zarr's event loop thread; backend errors become expstore errors."""
        try:
            return sync(coro)
        except StoreError:
            raise
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise KeyNotFound(f"no value at this key ({exc})", url=self.url, key=key) from exc
        except OSError as exc:
            raise StoreError(f"zarr store error: {exc}", url=self.url, key=key) from exc

    async def _get(self, path: str, key: str | None = None) -> bytes | None:
        buf = await self.zstore.get(path, prototype=default_buffer_prototype())
        return None if buf is None else buf.to_bytes()

    async def _set(self, path: str, data: bytes) -> None:
        await self.zstore.set(path, default_buffer_prototype().buffer.from_bytes(data))

    async def _meta(self, node: str, key: str | None = None) -> dict[str, Any] | None:
        """The parsed `zarr.json` of a node, or None when there is none."""
        raw = await self._get(_join(node, META), key)
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise CorruptData(f"unreadable zarr metadata at {_join(node, META)!r}: {exc}", url=self.url, key=key) from None
        if not isinstance(meta, dict):
            raise CorruptData(f"zarr metadata at {_join(node, META)!r} is not a JSON object", url=self.url, key=key)
        return meta

    async def _pointer(self, key: str) -> dict[str, Any]:
        """The pointer of an expstore key; KeyNotFound when `key` is not one."""
        if not await self._root_is_group(key):
            raise KeyNotFound("the store holds nothing yet", url=self.url, key=key)
        pointer = _pointer_of(await self._meta(_node(key), key))
        if pointer is None:
            raise KeyNotFound("no value at this key", url=self.url, key=key)
        return pointer

    async def _root_is_group(self, key: str | None) -> bool:
        """Whether the root is a Zarr group; CorruptData when something else sits there."""
        if self._root_checked:
            return True
        meta = await self._meta("", key)
        if meta is None:
            if not await self._has_content():
                return False
            # Writers create the root zarr.json before anything else: content with no root
            # zarr.json is a first writer that wrote both since the look above, or not Zarr at all.
            meta = await self._meta("", key)
            if meta is None:
                raise CorruptData(f"{self.where!r} exists but is not a Zarr group (no root zarr.json)", url=self.url, key=key)
        if meta.get("node_type") != "group" or meta.get("zarr_format") != 3:
            raise CorruptData(f"{self.where!r} is not a Zarr v3 group (root zarr.json says {meta.get('node_type')!r})", url=self.url, key=key)
        self._root_checked = True
        return True

    async def _has_content(self) -> bool:
        """Whether the root holds anything but the temp file of a first writer's root `zarr.json`,
        expstore's reserved names (the S3 probe object) or an S3 folder marker (SeaweedFS keeps one
        where the probe was deleted)."""
        async for name in self.zstore.list_dir(""):
            if name and not name.endswith(_ZARR_TEMP_SUFFIX) and not name.startswith(RESERVED_PREFIX):
                return True
        return False

    async def _ensure_root(self, key: str) -> None:
        if not await self._root_is_group(key):
            await self._prepare_container()
            await self._set(META, _group_doc(None))
            self._root_checked = True

    async def _prepare_container(self) -> None:
        """Create what must exist before the first key write (the S3 bucket)."""

    # ---- bytes hooks ------------------------------------------------------------------------

    def _read(self, key: str) -> bytes:
        return self._read_value(key, None, None)

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        return self._read_value(key, start, end)

    def _read_value(self, key: str, start: int | None, end: int | None) -> bytes:
        async def read_child(pointer: dict[str, Any]) -> bytes:
            if pointer["kind"] != "bytes":
                raise StoreError("this key holds a tree: use read_tree", url=self.url, key=key)
            size = int(pointer["size"])
            lo = 0 if start is None else min(start, size)
            hi = size if end is None else min(end, size)
            if hi <= lo:
                return b""
            where = {"url": self.url, "key": key, "path": "<bytes>"}
            array = await open_array(self.zstore, _join(_node(key), _child(pointer)), **where)
            data = (await read_selection(array, slice(lo, hi), passthrough=self._passthrough, **where)).tobytes()
            if (lo, hi) == (0, size):
                check_bytes(array, data, url=self.url, key=key)
            return data

        async def read() -> bytes:
            return await self._read_live(key, read_child)

        return self._run(read(), key)

    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        values = np.frombuffer(data, dtype=np.uint8)

        async def write_child(child: str) -> dict[str, Any]:
            options = {k: v for k, v in self.array_options.items() if k in ("compressors", "filters", "serializer", "config")}
            await write_array(self.zstore, child, values, {**options, "chunks": (max(1, min(len(values), BYTES_CHUNK)),)})
            return {"kind": "bytes", "size": len(values)}

        return self._commit(key, write_child, if_absent, if_match)

    def _delete(self, key: str) -> None:
        async def delete() -> None:
            await self._pointer(key)
            await self._remove_pointer(key)  # the key disappears here, atomically
            await self.zstore.delete_dir(_node(key))

        self._run(delete(), key)

    async def _remove_pointer(self, key: str) -> None:
        async with self._switch_lock():
            await self._pointer(key)
            await self.zstore.delete(_join(_node(key), META))

    def _exists(self, key: str) -> bool:
        try:
            self._run(self._pointer(key), key)
        except KeyNotFound:
            return False
        return True

    def _size(self, key: str) -> int:
        return int(self._run(self._pointer(key), key)["size"])

    def _version(self, key: str) -> str:
        return str(self._run(self._pointer(key), key)["live"])

    async def _live(self, key: str) -> str | None:
        pointer = _pointer_of(await self._meta(_node(key), key))
        return None if pointer is None else pointer["live"]

    def _list(self, prefix: str) -> Iterator[str]:
        async def collect() -> list[str]:
            if not await self._root_is_group(prefix):
                return []
            found: list[str] = []
            await self._walk("", prefix, found)
            return found

        return iter(self._run(collect(), prefix))

    async def _walk(self, node: str, prefix: str, found: list[str]) -> None:
        names = [n async for n in self.zstore.list_dir(node) if n != META and not n.endswith(_TEMP_SUFFIX)]
        children = [_join(node, n) for n in names]
        children = [c for c in children if _key_of(c).startswith(prefix) or prefix.startswith(_key_of(c) + "/")]
        metas = await asyncio.gather(*(self._meta(c) for c in children))
        below = []
        for child, meta in zip(children, metas):
            if meta is None or meta.get("node_type") != "group":
                continue
            if _pointer_of(meta) is not None:
                found.append(_key_of(child))
            else:
                below.append(child)
        await asyncio.gather(*(self._walk(c, prefix, found) for c in below))

    # ---- trees ------------------------------------------------------------------------------

    def _write_tree(self, key: str, skeleton: Skeleton, arrays: dict[str, Any]) -> str:
        async def write_child(child: str) -> dict[str, Any]:
            dtypes = {path: dtype_description(array.dtype) for path, array in arrays.items()}
            names = {path: _join(child, _zarr_path(path)) for path in arrays}
            await zasync.create_group(store=self.zstore, path=child, attributes={TREE_ATTR: {"skeleton": skeleton, "dtypes": dtypes}})
            await write_arrays(self.zstore, names, arrays, self.array_options)
            return {"kind": "tree", "size": int(sum(a.nbytes for a in arrays.values()))}

        return self._commit(key, write_child, False, None)

    def _read_tree(self, key: str, select: list[str] | None) -> Any:
        async def read_child(pointer: dict[str, Any]) -> Any:
            if pointer["kind"] != "tree":
                raise StoreError("this key holds bytes, not a tree: use read", url=self.url, key=key)
            child = _join(_node(key), _child(pointer))
            meta = await self._meta(child, key)
            info = ((meta or {}).get("attributes") or {}).get(TREE_ATTR)
            if info is None:
                raise CorruptData(f"the live version {_child(pointer)!r} of this tree is missing", url=self.url, key=key)
            skeleton, dtypes = info["skeleton"], info["dtypes"]
            names = {p: _join(child, _zarr_path(p)) for p in select_paths(array_paths(skeleton), select)}
            arrays = await read_arrays(self.zstore, names, dtypes, url=self.url, key=key, passthrough=self._passthrough)
            return unflatten(skeleton, arrays)

        return self._run(self._read_live(key, read_child), key)

    async def _read_live(self, key: str, read_child: Callable[[dict[str, Any]], Awaitable[T]]) -> T:
        """`read_child(pointer)` of the live version, retried when a concurrent write moved the pointer
        during the read (the old version may then have been reclaimed under it, part or whole)."""
        for _ in range(READ_ATTEMPTS):
            pointer = await self._pointer(key)
            try:
                value = await read_child(pointer)
            except CorruptData:
                if await self._live(key) == pointer["live"]:
                    raise  # the version is still live: real damage
                continue
            if await self._live(key) == pointer["live"]:
                return value
        raise StoreError("the value kept changing while it was read", url=self.url, key=key)

    # ---- the commit ---------------------------------------------------------------------------

    def _commit(self, key: str, write_child: Any, if_absent: bool, if_match: str | None) -> str:
        """Write a new child with `write_child(name)`, switch the key's pointer to it, drop the old one."""

        async def commit() -> str:
            await self._ensure_root(key)
            await self._ensure_parents(key)
            node = _node(key)
            current = await self._meta(node, key)
            if current is not None and _pointer_of(current) is None and await self._has_keys_below(node):
                raise StoreError("cannot write a value here: other keys sit below this key", url=self.url, key=key)
            _check(_pointer_of(current), if_absent, if_match, self.url, key)  # early: skip the payload if doomed
            token = f"{time.time_ns():x}-{secrets.token_hex(4)}"
            child = CHILD_PREFIX + token
            try:
                async with self._claim(_join(node, child)):
                    pointer = {**await write_child(_join(node, child)), "live": token}
                    await self._make_durable(_join(node, child))
                    replaced = await self._switch(key, pointer, if_absent, if_match)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.zstore.delete_dir(_join(node, child))
                raise
            await self._sweep(key, token, replaced, ORPHAN_GRACE_SECONDS)
            return token

        return self._run(commit(), key)

    async def _ensure_parents(self, key: str) -> None:
        parts = key.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            key_part = "/".join(parts[:i])
            if key_part in self._groups:
                continue
            node = _node(key_part)
            meta = await self._meta(node, key)
            if meta is None:
                await self.zstore.set_if_not_exists(_join(node, META), default_buffer_prototype().buffer.from_bytes(_group_doc(None)))
                meta = await self._meta(node, key)
            if _pointer_of(meta) is not None or (meta or {}).get("node_type") != "group":
                raise StoreError(
                    f"cannot write below {key_part!r}: a value already sits at that parent segment", url=self.url, key=key
                )
            self._groups.add(key_part)

    async def _has_keys_below(self, node: str) -> bool:
        found: list[str] = []
        await self._walk(node, "", found)
        return bool(found)

    async def _switch(self, key: str, pointer: dict[str, Any], if_absent: bool, if_match: str | None) -> str | None:
        """Re-check the condition and replace the pointer, exactly; return the replaced live token."""
        raise NotImplementedError

    async def _make_durable(self, node: str) -> None:
        """Make the child's files durable before the pointer names it (local: fsync)."""

    @contextlib.asynccontextmanager
    async def _switch_lock(self) -> AsyncIterator[None]:
        yield

    async def _sweep(self, key: str, live: str, replaced: str | None, older_than: float) -> int:
        """Delete the replaced child and every other non-live child older than `older_than` seconds.

        `live` is the caller's version, which another writer may have replaced since: the pointer
        is re-read for each orphan candidate after `_orphan` said no write of it is in flight, so a
        version committed meanwhile is never taken for an orphan."""
        node = _node(key)
        removed = 0
        now = time.time_ns()
        names = [n async for n in self.zstore.list_dir(node)]
        for name in names:
            if name == META or name == CHILD_PREFIX + live:
                continue
            token = name[len(CHILD_PREFIX):] if name.startswith(CHILD_PREFIX) else None
            if token is not None and (token == replaced or await self._unnamed_orphan(key, token, now, older_than)):
                await self.zstore.delete_dir(_join(node, name))
                removed += 1
            elif name.endswith(_TEMP_SUFFIX):
                removed += await self._drop_temp(_join(node, name), older_than)
        return removed

    async def _unnamed_orphan(self, key: str, token: str, now: int, older_than: float) -> bool:
        """Whether child `v-<token>` of `key` is an orphan and, checked after that, not the live version."""
        child = _join(_node(key), CHILD_PREFIX + token)
        return await self._orphan(child, (now - _token_time(token)) / 1e9, older_than) and await self._live(key) != token

    async def _drop_temp(self, path: str, older_than: float) -> int:
        return 0

    @contextlib.asynccontextmanager
    async def _claim(self, child: str) -> AsyncIterator[None]:
        """Mark a child as being written, for as long as its write is in flight."""
        yield

    async def _orphan(self, child: str, age: float, older_than: float) -> bool:
        """Whether a child no pointer names may be deleted: on S3, once older than the grace period."""
        return age >= older_than

    def reclaim(self, older_than: float = ORPHAN_GRACE_SECONDS) -> int:
        """Delete children that no pointer names (left by killed writes) older than `older_than` seconds.

        Writes do this for their own key; this walks every key. Returns how many were removed.
        Use `older_than=0` only when no write is in flight (an in-flight child is not yet named).
        """

        async def run() -> int:
            if not await self._root_is_group(None):
                return 0
            keys: list[str] = []
            await self._walk("", "", keys)
            counts = []
            for key in keys:
                live = await self._live(key)
                if live is not None:
                    counts.append(await self._sweep(key, live, None, older_than))
            return sum(counts)

        if self._closed:
            raise StoreError("cannot reclaim: the store is closed", url=self.url)
        return self._run(run())


class LocalZarrStore(ZarrStore):
    """A `.zarr` folder: zarr's LocalStore, pointer switches under an `flock` on the root folder."""

    def __init__(self, root: str | os.PathLike[str], url: str, array_options: dict[str, Any]):
        self.root = Path(root).expanduser().absolute()
        super().__init__(LocalStore(self.root), url, str(self.root), array_options)

    async def _root_is_group(self, key: str | None) -> bool:
        if not self._root_checked:
            try:
                mode = self.root.stat().st_mode  # one look: another writer may create the folder any time
            except FileNotFoundError:
                return False  # zarr's LocalStore would create the folder on first use: opening creates nothing
            if not stat.S_ISDIR(mode):
                raise CorruptData(f"{self.where!r} exists but is not a Zarr group (not a folder)", url=self.url, key=key)
        return await super()._root_is_group(key)

    async def _prepare_container(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    # The check and the switch run in one worker thread that holds the lock: a coroutine that
    # waited for the lock while holding the loop's executor threads could starve the lock holder.
    async def _switch(self, key: str, pointer: dict[str, Any], if_absent: bool, if_match: str | None) -> str | None:
        return await asyncio.to_thread(self._switch_now, key, pointer, if_absent, if_match)

    def _switch_now(self, key: str, pointer: dict[str, Any], if_absent: bool, if_match: str | None) -> str | None:
        meta = self._folder(key) / META
        with _flock(self.root):
            current = _pointer_of(_read_json(meta))
            _check(current, if_absent, if_match, self.url, key)
            _atomic_write(meta, _group_doc(pointer))
        return None if current is None else current["live"]

    async def _remove_pointer(self, key: str) -> None:
        await asyncio.to_thread(self._remove_pointer_now, key)

    def _remove_pointer_now(self, key: str) -> None:
        meta = self._folder(key) / META
        with _flock(self.root):
            if _pointer_of(_read_json(meta)) is None:
                raise KeyNotFound("no value at this key", url=self.url, key=key)
            meta.unlink()
        fsync_path(meta.parent)

    def _folder(self, key: str) -> Path:
        return self.root.joinpath(*_node(key).split("/"))

    async def _make_durable(self, node: str) -> None:
        await asyncio.to_thread(fsync_tree, self.root.joinpath(*node.split("/")))

    @contextlib.asynccontextmanager
    async def _claim(self, child: str) -> AsyncIterator[None]:
        # A writer holds a shared flock on its child folder until the pointer names it; a killed
        # writer's lock dies with it, so a sweeper that can lock a child knows no one writes it.
        folder = self.root.joinpath(*child.split("/"))
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    async def _orphan(self, child: str, age: float, older_than: float) -> bool:
        if age < min(older_than, SETTLE_SECONDS):
            return False  # between the writer's mkdir and its flock: a few microseconds, give it seconds
        try:
            fd = os.open(self.root.joinpath(*child.split("/")), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        finally:
            os.close(fd)
        return True

    async def _drop_temp(self, path: str, older_than: float) -> int:
        full = self.root.joinpath(*path.split("/"))
        with contextlib.suppress(FileNotFoundError):
            if time.time() - full.stat().st_mtime >= older_than:
                full.unlink()
                return 1
        return 0


class MemoryZarrStore(ZarrStore):
    """`zarr+memory://name`: zarr's MemoryStore on one dict per name, shared process-wide."""

    @contextlib.asynccontextmanager
    async def _claim(self, child: str) -> AsyncIterator[None]:
        entry = (self.where, child)
        _IN_FLIGHT.add(entry)
        try:
            yield
        finally:
            _IN_FLIGHT.discard(entry)

    async def _orphan(self, child: str, age: float, older_than: float) -> bool:
        return (self.where, child) not in _IN_FLIGHT  # the process knows every write in flight

    @contextlib.asynccontextmanager
    async def _switch_lock(self) -> AsyncIterator[None]:
        async with _memory_switch_lock():  # every coroutine runs on zarr's one event loop thread
            yield

    async def _switch(self, key: str, pointer: dict[str, Any], if_absent: bool, if_match: str | None) -> str | None:
        async with self._switch_lock():
            current = _pointer_of(await self._meta(_node(key), key))
            _check(current, if_absent, if_match, self.url, key)
            await self._set(_join(_node(key), META), _group_doc(pointer))
        return None if current is None else current["live"]


# ---- helpers ------------------------------------------------------------------------------------


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _node_name(segment: str) -> str:
    """A key or array-path segment as a zarr node name: only `zarr.json` itself (and its %-prefixed
    forms, to stay reversible) would clash with zarr's metadata documents, so they get one more `%`."""
    return "%" + segment if segment.lstrip("%") == META else segment


def _segment_of(name: str) -> str:
    return name[1:] if name.startswith("%") and name.lstrip("%") == META else name


def _node(key: str) -> str:
    return "/".join(_node_name(s) for s in key.split("/"))


def _key_of(node: str) -> str:
    return "/".join(_segment_of(s) for s in node.split("/"))


def _zarr_path(array_path: str) -> str:
    return "/".join(_node_name(s) for s in array_path.split("/"))


def _child(pointer: dict[str, Any]) -> str:
    return CHILD_PREFIX + pointer["live"]


def _token_time(token: str) -> int:
    try:
        return int(token.partition("-")[0], 16)
    except ValueError:
        return 0


def _pointer_of(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    if meta is None or meta.get("node_type") != "group":
        return None
    pointer = (meta.get("attributes") or {}).get(ATTR)
    return pointer if isinstance(pointer, dict) and "live" in pointer else None


def _group_doc(pointer: dict[str, Any] | None) -> bytes:
    attributes = {} if pointer is None else {ATTR: pointer}
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes}, indent=2).encode()


def _check(current: dict[str, Any] | None, if_absent: bool, if_match: str | None, url: str, key: str) -> None:
    if if_absent and current is not None:
        raise PreconditionFailed("if_absent: the key already holds a value", url=url, key=key)
    if if_match is not None and (current is None or current["live"] != if_match):
        found = None if current is None else current["live"]
        raise PreconditionFailed(f"if_match: version is {found!r}, expected {if_match!r}", url=url, key=key)


def _atomic_write(path: Path, data: bytes) -> None:
    """Temp file + fsync + rename + folder fsync: the pointer switch on local disk."""
    tmp = path.with_name(f"{META}.{secrets.token_hex(6)}{_TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)


@contextlib.contextmanager
def _flock(folder: Path) -> Iterator[None]:
    """An exclusive `flock` on the folder itself (no lock file that zarr would see as a stray entry)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _split_options(url: str, storage_options: dict[str, Any], allow_other: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    array_options = {k: storage_options.pop(k) for k in list(storage_options) if k in ARRAY_OPTIONS}
    if storage_options and not allow_other:
        raise TypeError(
            f"unknown storage options {sorted(storage_options)} for {url!r}; a Zarr store takes {sorted(ARRAY_OPTIONS)}"
        )
    return array_options, storage_options


def open_url(url: str, location: str, **storage_options: Any) -> ZarrStore:
    """Open `run.zarr`, `zarr:///abs/run.zarr`, `zarr+memory://name` or `zarr+s3://bucket/run.zarr`.

    `compressors=`, `filters=`, `serializer=`, `chunks=`, `shards=`, `config=` go to
    `zarr.create_array` for every array written; for `zarr+s3` the other options go to
    `s3fs.S3FileSystem` (endpoint_url, key, secret, client_kwargs, config_kwargs, ...).
    """
    scheme = url.partition("://")[0].lower() if "://" in url else "file"
    kind = scheme.partition("+")[2] or "file"
    if kind in ("file", ""):
        array_options, _ = _split_options(url, storage_options, allow_other=False)
        path = location
        if scheme == "zarr":
            path = "/" + location.lstrip("/") if not location.startswith("/") else location
        return LocalZarrStore(path, url, array_options)
    if kind == "memory":
        array_options, _ = _split_options(url, storage_options, allow_other=False)
        name = location.strip("/")
        with _MEMORY_LOCK:
            shared = _MEMORY_STORES.setdefault(name, {})
        return MemoryZarrStore(MemoryStore(shared), url, f"zarr+memory://{name}", array_options)
    if kind == "s3":
        array_options, other = _split_options(url, storage_options, allow_other=True)
        from .s3 import S3ZarrStore  # s3fs and botocore load only for zarr+s3

        return S3ZarrStore(location, url, array_options, other)
    raise InvalidURL(f"unknown Zarr storage {kind!r}: use a path, zarr+memory:// or zarr+s3://", url=url)
