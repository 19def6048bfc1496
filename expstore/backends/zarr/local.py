"""LocalZarrStore: a `.zarr` folder on disk, whose pointer switches are exact across processes by an `flock`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from zarr.storage import LocalStore

from ...errors import CorruptData, KeyNotFound
from ...store.conditions import check_condition
from ..posix import flocked, fsync_path, fsync_tree, lock_if_free, new_file_beside
from .nodes import META, TEMP_SUFFIX, group_doc, live_of, node_of, pointer_of
from .store import ZarrStore

__all__ = ["SETTLE_SECONDS", "LocalZarrStore"]

SETTLE_SECONDS = 5.0  # an unlocked child no pointer names is an orphan once this old


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
        with flocked(self.root):
            current = pointer_of(_read_json(meta))
            check_condition(live_of(current), if_absent, if_match, self.url, key)
            with new_file_beside(meta, f"{META}.{secrets.token_hex(6)}{TEMP_SUFFIX}") as pending:
                pending.write([group_doc(pointer)])
                pending.replace()
        return live_of(current)

    async def _remove_pointer(self, key: str) -> None:
        await asyncio.to_thread(self._remove_pointer_now, key)

    def _remove_pointer_now(self, key: str) -> None:
        meta = self._folder(key) / META
        with flocked(self.root):
            if pointer_of(_read_json(meta)) is None:
                raise KeyNotFound("no value at this key", url=self.url, key=key)
            meta.unlink()
        fsync_path(meta.parent)

    def _folder(self, key: str) -> Path:
        return self.root.joinpath(*node_of(key).split("/"))

    async def _make_durable(self, node: str) -> None:
        await asyncio.to_thread(fsync_tree, self.root.joinpath(*node.split("/")))

    @contextlib.asynccontextmanager
    async def _claim(self, child: str) -> AsyncIterator[None]:
        # A writer holds a shared flock on its child folder until the pointer names it; a killed
        # writer's lock dies with it, so a sweeper that can lock a child knows no one writes it.
        folder = self.root.joinpath(*child.split("/"))
        folder.mkdir(parents=True, exist_ok=True)
        with flocked(folder, shared=True):
            yield

    async def _orphan(self, child: str, age: float, older_than: float) -> bool:
        if age < min(older_than, SETTLE_SECONDS):
            return False  # between the writer's mkdir and its flock: a few microseconds, give it seconds
        try:
            with lock_if_free(self.root.joinpath(*child.split("/"))) as fd:
                return fd is not None  # None: a live writer holds it
        except FileNotFoundError:
            return False

    async def _drop_temp(self, path: str, older_than: float) -> int:
        full = self.root.joinpath(*path.split("/"))
        with contextlib.suppress(FileNotFoundError):
            if time.time() - full.stat().st_mtime >= older_than:
                full.unlink()
                return 1
        return 0


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in the file at `path`; None when it is missing or holds anything else."""
    try:
        meta = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None
