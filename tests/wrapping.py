"""A store that hands every call on to another store, for tests that count, fail or race those calls."""

from __future__ import annotations

from typing import Any

from expstore import Store

__all__ = ["DelegatingStore"]


class DelegatingStore(Store):
    """Forwards every bytes-level call to `inner` (with its append and conditional-write abilities).

    Every forwarded call goes through `forward(operation, ...)`: a subclass that watches all calls
    overrides that one method; one that changes a single operation overrides its hook (`_write`, ...).
    Trees go through this store's own reads and writes; closing it leaves `inner` open.
    """

    def __init__(self, inner: Store):
        super().__init__(inner.url)
        self.inner = inner
        self.supports_append = inner.supports_append
        self.supports_conditional_writes = inner.supports_conditional_writes
        self.no_conditional_writes_reason = inner.no_conditional_writes_reason

    def forward(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        """Call `inner`'s public method `operation` (``"read"``, ``"write"``, ...)."""
        return getattr(self.inner, operation)(*args, **kwargs)

    def _read(self, key: str) -> bytes:
        return self.forward("read", key)

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        return self.forward("read_range", key, start, end)

    def _write(self, key: str, data: Any, if_absent: bool, if_match: str | None) -> str:
        return self.forward("write", key, data, if_absent=if_absent, if_match=if_match)

    def _append(self, key: str, data: Any) -> None:
        self.forward("append", key, data)

    def _delete(self, key: str) -> None:
        self.forward("delete", key)

    def _exists(self, key: str) -> bool:
        return self.forward("exists", key)

    def _size(self, key: str) -> int:
        return self.forward("size", key)

    def _version(self, key: str) -> str:
        return self.forward("version", key)

    def _list(self, prefix: str) -> list[str]:
        return self.forward("list", prefix)

    def _list_versions(self, prefix: str) -> Any:
        return self.forward("list_versions", prefix).items()
