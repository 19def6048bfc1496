"""MemoryStore: process-wide in-memory values for tests and notebooks (`memory://name`)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

from ..errors import KeyNotFound
from ..store.base import Store
from ..store.conditions import check_condition

__all__ = ["MemoryStore", "open_url"]

# One namespace per process, keyed by full path, so `memory://a` and `memory://a/b` see the same values.
_VALUES: dict[str, tuple[bytes, str]] = {}
_LOCK = threading.Lock()
_GENERATION = itertools.count(1)


class MemoryStore(Store):
    """Values live in a dict shared by every MemoryStore of the process; commits hold one lock."""

    supports_append = True
    supports_conditional_writes = True

    def __init__(self, root: str, url: str | None = None):
        self.root = root.strip("/")
        super().__init__(url or f"memory://{self.root}")

    def _full(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _entry(self, key: str) -> tuple[bytes, str]:
        try:
            return _VALUES[self._full(key)]
        except KeyError:
            raise KeyNotFound("no value at this key", url=self.url, key=key) from None

    def _read(self, key: str) -> bytes:
        return self._entry(key)[0]

    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        value = bytes(data)
        full = self._full(key)
        with _LOCK:
            current = _VALUES.get(full)
            check_condition(None if current is None else current[1], if_absent, if_match, self.url, key)
            token = str(next(_GENERATION))
            _VALUES[full] = (value, token)
        return token

    def _append(self, key: str, data: bytes | memoryview) -> None:
        full = self._full(key)
        with _LOCK:
            old = _VALUES.get(full, (b"", ""))[0]
            _VALUES[full] = (old + bytes(data), str(next(_GENERATION)))

    def _delete(self, key: str) -> None:
        with _LOCK:
            if _VALUES.pop(self._full(key), None) is None:
                raise KeyNotFound("no value at this key", url=self.url, key=key)

    def _exists(self, key: str) -> bool:
        return self._full(key) in _VALUES

    def _size(self, key: str) -> int:
        return len(self._entry(key)[0])

    def _version(self, key: str) -> str:
        return self._entry(key)[1]

    def _list(self, prefix: str) -> Iterator[str]:
        base = f"{self.root}/" if self.root else ""
        with _LOCK:
            names = list(_VALUES)
        for name in names:
            if name.startswith(base + prefix):
                yield name[len(base):]


def open_url(url: str, location: str) -> MemoryStore:
    """Open `memory://name[/prefix]`; every store of the process with the same path shares values."""
    return MemoryStore(location, url=url)
