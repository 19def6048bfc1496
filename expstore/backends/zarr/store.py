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
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import numpy as np
import zarr.api.asynchronous as zasync
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ...errors import CorruptData, KeyNotFound, StoreError
from ...format.tree import Skeleton, dtype_description, dtype_notes, leaf_arrays, selected_arrays, unflatten
from ...store.base import Store
from ...store.conditions import check_condition
from ...store.keys import RESERVED_PREFIX
from .arrays import PASSTHROUGH, check_bytes, open_array, read_arrays, read_selection, write_array, write_arrays
from .nodes import CHILD_PREFIX, META, TEMP_SUFFIX, child_of, group_doc, join, key_of, live_of, node_of, pointer_of, token_time

__all__ = ["ARRAY_OPTIONS", "ORPHAN_GRACE_SECONDS", "ZarrStore"]

T = TypeVar("T")

TREE_ATTR = "expstore_tree"  # the attribute of a tree child: skeleton and exact dtypes
BYTES_CHUNK = 4 * 2**20  # chunk length of a bytes value: read_range reads only the chunks it needs
ORPHAN_GRACE_SECONDS = 3600.0  # S3: a child no pointer names is reclaimed by a write once this old
READ_ATTEMPTS = 8  # a read retries when a concurrent write moved the pointer while it read
# Measured (see docs/decisions.md): zstd halves write throughput of float data, so no compression by default.
DEFAULT_COMPRESSORS: Any = None
ARRAY_OPTIONS = {"compressors", "filters", "serializer", "chunks", "shards", "config"}
_ZARR_TEMP_SUFFIX = ".partial"  # zarr's LocalStore writes `zarr.<uuid>.partial`, then renames it


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
        raw = await self._get(join(node, META), key)
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            raise CorruptData(f"unreadable zarr metadata at {join(node, META)!r}: {exc}", url=self.url, key=key) from None
        if not isinstance(meta, dict):
            raise CorruptData(f"zarr metadata at {join(node, META)!r} is not a JSON object", url=self.url, key=key)
        return meta

    async def _pointer(self, key: str) -> dict[str, Any]:
        """The pointer of an expstore key; KeyNotFound when `key` is not one."""
        if not await self._root_is_group(key):
            raise KeyNotFound("the store holds nothing yet", url=self.url, key=key)
        pointer = pointer_of(await self._meta(node_of(key), key))
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
            await self._set(META, group_doc(None))
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
            array = await open_array(self.zstore, join(node_of(key), child_of(pointer)), **where)
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
            await self.zstore.delete_dir(node_of(key))

        self._run(delete(), key)

    async def _remove_pointer(self, key: str) -> None:
        async with self._switch_lock():
            await self._pointer(key)
            await self.zstore.delete(join(node_of(key), META))

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
        pointer = pointer_of(await self._meta(node_of(key), key))
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
        names = [n async for n in self.zstore.list_dir(node) if n != META and not n.endswith(TEMP_SUFFIX)]
        children = [join(node, n) for n in names]
        children = [c for c in children if key_of(c).startswith(prefix) or prefix.startswith(key_of(c) + "/")]
        metas = await asyncio.gather(*(self._meta(c) for c in children))
        below = []
        for child, meta in zip(children, metas):
            if meta is None or meta.get("node_type") != "group":
                continue
            if pointer_of(meta) is not None:
                found.append(key_of(child))
            else:
                below.append(child)
        await asyncio.gather(*(self._walk(c, prefix, found) for c in below))

    # ---- trees ------------------------------------------------------------------------------

    def _write_tree(self, key: str, skeleton: Skeleton, arrays: dict[str, Any]) -> str:
        async def write_child(child: str) -> dict[str, Any]:
            dtypes = {path: dtype_description(array.dtype) for path, array in arrays.items()}
            names = {path: join(child, node_of(path)) for path in arrays}
            await zasync.create_group(store=self.zstore, path=child, attributes={TREE_ATTR: {"skeleton": skeleton, "dtypes": dtypes}})
            await write_arrays(self.zstore, names, arrays, self.array_options, dtype_notes(skeleton))
            return {"kind": "tree", "size": int(sum(a.nbytes for a in arrays.values()))}

        return self._commit(key, write_child, False, None)

    def _read_tree(self, key: str, select: list[str] | None, map_location: Any) -> Any:
        async def read_child(pointer: dict[str, Any]) -> Any:
            if pointer["kind"] != "tree":
                raise StoreError("this key holds bytes, not a tree: use read", url=self.url, key=key)
            child = join(node_of(key), child_of(pointer))
            meta = await self._meta(child, key)
            info = ((meta or {}).get("attributes") or {}).get(TREE_ATTR)
            if info is None:
                raise CorruptData(f"the live version {child_of(pointer)!r} of this tree is missing", url=self.url, key=key)
            skeleton, dtypes = info["skeleton"], info["dtypes"]
            names = {p: join(child, node_of(p)) for p in selected_arrays(leaf_arrays(skeleton), select)}
            arrays = await read_arrays(self.zstore, names, dtypes, url=self.url, key=key, passthrough=self._passthrough)
            return unflatten(skeleton, arrays, map_location=map_location)

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
            node = node_of(key)
            current = await self._meta(node, key)
            if current is not None and pointer_of(current) is None and await self._has_keys_below(node):
                raise StoreError("cannot write a value here: other keys sit below this key", url=self.url, key=key)
            check_condition(live_of(pointer_of(current)), if_absent, if_match, self.url, key)  # early: skip the payload if doomed
            token = f"{time.time_ns():x}-{secrets.token_hex(4)}"
            child = CHILD_PREFIX + token
            try:
                async with self._claim(join(node, child)):
                    pointer = {**await write_child(join(node, child)), "live": token}
                    await self._make_durable(join(node, child))
                    replaced = await self._switch(key, pointer, if_absent, if_match)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.zstore.delete_dir(join(node, child))
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
            node = node_of(key_part)
            meta = await self._meta(node, key)
            if meta is None:
                await self.zstore.set_if_not_exists(join(node, META), default_buffer_prototype().buffer.from_bytes(group_doc(None)))
                meta = await self._meta(node, key)
            if pointer_of(meta) is not None or (meta or {}).get("node_type") != "group":
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
        node = node_of(key)
        removed = 0
        now = time.time_ns()
        names = [n async for n in self.zstore.list_dir(node)]
        for name in names:
            if name == META or name == CHILD_PREFIX + live:
                continue
            token = name[len(CHILD_PREFIX):] if name.startswith(CHILD_PREFIX) else None
            if token is not None and (token == replaced or await self._unnamed_orphan(key, token, now, older_than)):
                await self.zstore.delete_dir(join(node, name))
                removed += 1
            elif name.endswith(TEMP_SUFFIX):
                removed += await self._drop_temp(join(node, name), older_than)
        return removed

    async def _unnamed_orphan(self, key: str, token: str, now: int, older_than: float) -> bool:
        """Whether child `v-<token>` of `key` is an orphan and, checked after that, not the live version."""
        child = join(node_of(key), CHILD_PREFIX + token)
        return await self._orphan(child, (now - token_time(token)) / 1e9, older_than) and await self._live(key) != token

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
