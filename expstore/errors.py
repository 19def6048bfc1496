"""The one exception hierarchy of expstore; every message names the store URL and the key."""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "CorruptData",
    "InvalidKey",
    "InvalidURL",
    "KeyNotFound",
    "PickleNotAllowed",
    "PreconditionFailed",
    "StoreError",
]


class StoreError(Exception):
    """Base of every expstore error; carries the store URL and the key it concerns."""

    def __init__(self, message: str, *, url: str | None = None, key: str | None = None):
        self.message = message
        self.url = url
        self.key = key
        super().__init__(message)

    def __str__(self) -> str:
        where = []
        if self.url is not None:
            where.append(f"store {self.url!r}")
        if self.key is not None:
            where.append(f"key {self.key!r}")
        return f"{self.message} ({', '.join(where)})" if where else self.message


class KeyNotFound(StoreError, FileNotFoundError, KeyError):
    """The key (or the store's root) holds no value."""


class InvalidKey(StoreError, ValueError):
    """A key breaks the key rules (`..`, absolute, empty segment, control characters...)."""


class InvalidURL(StoreError, ValueError):
    """A URL names no known store: unknown scheme or malformed location."""


class PreconditionFailed(StoreError):
    """A conditional write (`if_absent` / `if_match`) found the key in another state."""


class CorruptData(StoreError):
    """Stored bytes are truncated or malformed."""


class BackendUnavailable(StoreError):
    """The backend cannot be used: its package is missing or its endpoint does not answer."""


class PickleNotAllowed(StoreError):
    """The checkpoint holds pickled leaves and the reader did not pass `allow_pickle=True`."""
