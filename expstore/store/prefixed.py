"""PrefixedStore: a view of another store under a key prefix (`runs/exp.h5/checkpoints`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from ..errors import StoreError
from .base import Store
from .keys import validate_key

__all__ = ["PrefixedStore"]

T = TypeVar("T")


def _outer_errors(method: Callable[..., T]) -> Callable[..., T]:
    """Re-raise the inner store's errors with this store's URL and key, so messages name what the user passed."""

    @functools.wraps(method)
    def wrapper(self: PrefixedStore, key: str, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, key, *args, **kwargs)
        except StoreError as exc:
            if exc.url != self.inner.url:
                raise
            inner_key = exc.key
            if isinstance(inner_key, str) and inner_key.startswith(self.prefix + "/"):
                inner_key = inner_key[len(self.prefix) + 1 :]
            raise type(exc)(exc.message, url=self.url, key=inner_key) from exc

    return wrapper


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

    @_outer_errors
    def _read(self, key: str) -> bytes:
        return self.inner.read(self._full(key))

    @_outer_errors
    def _read_buffer(self, key: str) -> np.ndarray:
        return self.inner.read_buffer(self._full(key))

    @_outer_errors
    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        return self.inner.read_range(self._full(key), start, end)

    @_outer_errors
    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        return self.inner.write(self._full(key), data, if_absent=if_absent, if_match=if_match)

    @_outer_errors
    def _write_parts(self, key: str, parts: list[bytes | memoryview], if_absent: bool, if_match: str | None) -> str:
        return self.inner.write(self._full(key), parts, if_absent=if_absent, if_match=if_match)

    @_outer_errors
    def _append(self, key: str, data: bytes | memoryview) -> None:
        self.inner.append(self._full(key), data)

    @_outer_errors
    def _delete(self, key: str) -> None:
        self.inner.delete(self._full(key))

    @_outer_errors
    def _exists(self, key: str) -> bool:
        return self.inner.exists(self._full(key))

    @_outer_errors
    def _size(self, key: str) -> int:
        return self.inner.size(self._full(key))

    @_outer_errors
    def _version(self, key: str) -> str:
        return self.inner.version(self._full(key))

    def _list(self, prefix: str) -> Iterator[str]:
        base = f"{self.prefix}/"
        for key in self.inner.list(base + prefix):
            yield key[len(base):]

    def _list_versions(self, prefix: str) -> Iterator[tuple[str, str]]:
        base = f"{self.prefix}/"
        for key, version in self.inner.list_versions(base + prefix).items():
            yield key[len(base):], version

    @_outer_errors
    def _write_tree(self, key: str, skeleton: Any, arrays: dict[str, Any]) -> str:
        return self.inner._write_tree(self.inner._key(self._full(key)), skeleton, arrays)

    @_outer_errors
    def _read_tree(self, key: str, select: list[str] | None, map_location: Any) -> Any:
        return self.inner.read_tree(self._full(key), select, map_location=map_location)

    def _close(self) -> None:
        self.inner.close()
