"""PrefixedStore: a view of another store under a key prefix (`runs/exp.h5/checkpoints`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import Store
from .keys import validate_key


class PrefixedStore(Store):
    """Every key `k` is the inner store's `prefix/k`; capabilities are the inner store's."""

    def __init__(self, inner: Store, prefix: str, url: str):
        self.inner = inner
        self.prefix = validate_key(prefix, url)
        self.supports_append = inner.supports_append
        self.supports_arrays = inner.supports_arrays
        self.supports_conditional_writes = inner.supports_conditional_writes
        super().__init__(url)

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}"

    def _read(self, key: str) -> bytes:
        return self.inner.read(self._full(key))

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        return self.inner.read_range(self._full(key), start, end)

    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        return self.inner.write(self._full(key), data, if_absent=if_absent, if_match=if_match)

    def _append(self, key: str, data: bytes | memoryview) -> None:
        self.inner.append(self._full(key), data)

    def _delete(self, key: str) -> None:
        self.inner.delete(self._full(key))

    def _exists(self, key: str) -> bool:
        return self.inner.exists(self._full(key))

    def _size(self, key: str) -> int:
        return self.inner.size(self._full(key))

    def _version(self, key: str) -> str:
        return self.inner.version(self._full(key))

    def _list(self, prefix: str) -> Iterator[str]:
        base = f"{self.prefix}/"
        for key in self.inner.list(base + prefix):
            yield key[len(base):]

    def _write_tree(self, key: str, skeleton: Any, arrays: dict[str, Any]) -> str:
        return self.inner._write_tree(self.inner._key(self._full(key)), skeleton, arrays)

    def _read_tree(self, key: str, select: list[str] | None) -> Any:
        return self.inner.read_tree(self._full(key), select)

    def _close(self) -> None:
        self.inner.close()
