"""MemoryZarrStore: `zarr+memory://name`, one zarr MemoryStore dict per name, shared by the whole process."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

from zarr.storage import MemoryStore

from ...store.conditions import check_condition
from .nodes import META, group_doc, join, live_of, node_of, pointer_of
from .store import ZarrStore

__all__ = ["MemoryZarrStore", "open_memory"]

_MEMORY_STORES: dict[str, dict[str, Any]] = {}  # zarr+memory://name -> the dict every store of that name shares
_MEMORY_LOCK = threading.Lock()
_MEMORY_SWITCH: list[asyncio.Lock] = []
_IN_FLIGHT: set[tuple[str, str]] = set()  # (memory store, child) of every write in flight


def _memory_switch_lock() -> asyncio.Lock:
    with _MEMORY_LOCK:
        if not _MEMORY_SWITCH:
            _MEMORY_SWITCH.append(asyncio.Lock())
        return _MEMORY_SWITCH[0]


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
            current = pointer_of(await self._meta(node_of(key), key))
            check_condition(live_of(current), if_absent, if_match, self.url, key)
            await self._set(join(node_of(key), META), group_doc(pointer))
        return live_of(current)



def open_memory(name: str, url: str, array_options: dict[str, Any]) -> MemoryZarrStore:
    """The store `zarr+memory://name`: every store of that name in the process sees the same values."""
    with _MEMORY_LOCK:
        shared = _MEMORY_STORES.setdefault(name, {})
    return MemoryZarrStore(MemoryStore(shared), url, f"zarr+memory://{name}", array_options)
