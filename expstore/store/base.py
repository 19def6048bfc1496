"""The Store protocol: one base class validates keys and arguments once; a backend fills small hooks."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import numpy as np

from ..errors import KeyNotFound, StoreError
from ..format.checkpoint import read_state, write_flat
from ..format.tree import Skeleton, flatten
from .keys import validate_key, validate_prefix

__all__ = ["Store"]

BytesLike = bytes | bytearray | memoryview
T = TypeVar("T")


def _translated(operation: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Check the store is open and turn stray OS errors of a hook into expstore errors naming URL and key."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def wrapper(self: Store, *args: Any, **kwargs: Any) -> T:
            key = args[0] if args else kwargs.get("key", kwargs.get("prefix"))
            if self._closed:
                raise StoreError(f"cannot {operation}: the store is closed", url=self.url, key=key)
            try:
                return method(self, *args, **kwargs)
            except StoreError:
                raise
            except (FileNotFoundError, NotADirectoryError) as exc:
                raise KeyNotFound("no value at this key", url=self.url, key=key) from exc
            except OSError as exc:
                raise StoreError(f"{operation} failed: {exc}", url=self.url, key=key) from exc

        return wrapper

    return decorate


class Store:
    """A flat key -> bytes store rooted at `url`.

    Subclasses implement the `_hooks`; the public methods validate keys, arguments and
    capabilities first, so every backend accepts and rejects exactly the same input.
    """

    supports_append: bool = False
    supports_arrays: bool = False
    supports_conditional_writes: bool = False
    no_conditional_writes_reason: str = "this store does not support conditional writes"

    def __init__(self, url: str):
        self.url = url
        self._closed = False

    # ---- public API -------------------------------------------------------------------------

    @_translated("read")
    def read(self, key: str) -> bytes:
        """Return the whole value stored at `key`."""
        return self._read(self._key(key))

    @_translated("read")
    def read_buffer(self, key: str) -> np.ndarray:
        """Return the whole value at `key` as a writable uint8 array the caller owns, so arrays can
        view it without another copy (S3 copies the response into it chunk by chunk)."""
        return self._read_buffer(self._key(key))

    @_translated("read")
    def local_path(self, key: str) -> str | None:
        """The path of the plain file on this machine that holds `key`'s value, so a reader can
        memory-map it; None on stores that keep values otherwise. Whether the file exists is not checked."""
        return self._local_path(self._key(key))

    @_translated("read_range")
    def read_range(self, key: str, start: int, end: int | None = None) -> bytes:
        """Return bytes `[start, end)` of the value, clamped to its size like a slice (`end=None`: to the end)."""
        key = self._key(key)
        if not isinstance(start, int) or start < 0:
            raise ValueError(f"read_range start must be an int >= 0, got {start!r} for key {key!r} in {self.url!r}")
        if end is not None and (not isinstance(end, int) or end < start):
            raise ValueError(f"read_range end must be None or an int >= start, got {end!r} for key {key!r} in {self.url!r}")
        if end == start:
            self._size(key)  # still raises KeyNotFound for a missing key
            return b""
        return self._read_range(key, start, end)

    @_translated("write")
    def write(
        self, key: str, data: BytesLike | Sequence[BytesLike], *, if_absent: bool = False, if_match: str | None = None
    ) -> str:
        """Atomically store `data` at `key` and return the new value's version token.

        `data` is one buffer or a list of buffers stored back to back (stores that can write them
        without joining them first, like local disk, do). `if_absent=True` writes only when the
        key holds nothing; `if_match=token` only when the current value still has that version.
        Otherwise `PreconditionFailed` and nothing changes.
        """
        key = self._key(key)
        parts = [_bytes_like(part, self.url, key) for part in data] if isinstance(data, (list, tuple)) else None
        payload = _bytes_like(data, self.url, key) if parts is None else b""
        if if_absent and if_match is not None:
            raise ValueError(f"pass if_absent or if_match, not both (key {key!r} in {self.url!r})")
        if (if_absent or if_match is not None) and not self.supports_conditional_writes:
            raise StoreError(self.no_conditional_writes_reason, url=self.url, key=key)
        if if_match is not None and not isinstance(if_match, str):
            raise TypeError(f"if_match must be a version token (str), got {type(if_match).__name__}")
        if parts is not None:
            return self._write_parts(key, parts, if_absent, if_match)
        return self._write(key, payload, if_absent, if_match)

    @_translated("append")
    def append(self, key: str, data: BytesLike) -> None:
        """Add `data` at the end of the value at `key` (created if absent), where `supports_append`."""
        key = self._key(key)
        payload = _bytes_like(data, self.url, key)
        if not self.supports_append:
            raise StoreError("this store does not support append", url=self.url, key=key)
        self._append(key, payload)

    @_translated("delete")
    def delete(self, key: str) -> None:
        """Remove the value at `key`; `KeyNotFound` if there is none."""
        self._delete(self._key(key))

    @_translated("exists")
    def exists(self, key: str) -> bool:
        """Whether `key` holds a value."""
        return self._exists(self._key(key))

    @_translated("size")
    def size(self, key: str) -> int:
        """Length in bytes of the value at `key`."""
        return self._size(self._key(key))

    @_translated("version")
    def version(self, key: str) -> str:
        """Opaque token of the current value at `key`, for `write(..., if_match=token)`."""
        return self._version(self._key(key))

    @_translated("list")
    def list(self, prefix: str = "") -> list[str]:
        """All keys that start with `prefix` (a plain string prefix), sorted."""
        prefix = validate_prefix(prefix, self.url)
        return sorted(k for k in self._list(prefix) if k.startswith(prefix))

    @_translated("list_versions")
    def list_versions(self, prefix: str = "") -> dict[str, str]:
        """{key: version token} of all keys that start with `prefix`, sorted by key: from the listing
        itself where it carries them (local, S3), else one `version` per key. A key deleted between
        the listing and its version is left out."""
        prefix = validate_prefix(prefix, self.url)
        return dict(sorted((k, v) for k, v in self._list_versions(prefix) if k.startswith(prefix)))

    @_translated("write_tree")
    def write_tree(self, key: str, tree: Any) -> str:
        """Atomically store a tree of numpy arrays and plain values at `key`; returns its version token.

        Array-native stores keep each array as a real dataset; `TypeError` names a leaf that
        cannot be stored without pickle, and nothing is written then.
        """
        key = self._key(key)
        skeleton, arrays = flatten(tree)
        return self._write_tree(key, skeleton, arrays)

    @_translated("read_tree")
    def read_tree(self, key: str, select: list[str] | None = None, *, map_location: Any = None) -> Any:
        """Read the tree at `key`; `select=["model/w", "opt"]` reads only those arrays (and those below).
        Torch tensors go where `map_location` says, as with `torch.load` (None: their saved device)."""
        return self._read_tree(self._key(key), select, map_location)

    def remove_stale_temp_files(self, dry_run: bool = False) -> list[str]:
        """Delete what writers killed mid-write left behind where no reader sees it (the local
        store's temp files) and return it (`dry_run`: only return it); stores that leave nothing return []."""
        return []

    def close(self) -> None:
        """Release the backend's resources; later calls raise `StoreError`."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # ---- hooks for backends -----------------------------------------------------------------

    def _key(self, key: object) -> str:
        return validate_key(key, self.url)

    def _read(self, key: str) -> bytes:
        raise NotImplementedError

    def _read_buffer(self, key: str) -> np.ndarray:
        return np.frombuffer(bytearray(self._read(key)), np.uint8)

    def _local_path(self, key: str) -> str | None:
        return None

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        return self._read(key)[start:end]

    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        raise NotImplementedError

    def _write_parts(self, key: str, parts: list[bytes | memoryview], if_absent: bool, if_match: str | None) -> str:
        return self._write(key, b"".join(parts), if_absent, if_match)

    def _append(self, key: str, data: bytes | memoryview) -> None:
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    def _exists(self, key: str) -> bool:
        try:
            self._size(key)
        except KeyNotFound:
            return False
        return True

    def _size(self, key: str) -> int:
        raise NotImplementedError

    def _version(self, key: str) -> str:
        raise NotImplementedError

    def _list(self, prefix: str) -> Iterable[str]:
        raise NotImplementedError

    def _list_versions(self, prefix: str) -> Iterable[tuple[str, str]]:
        for key in self._list(prefix):
            try:
                yield key, self._version(key)
            except KeyNotFound:
                continue  # deleted since the listing

    def _close(self) -> None:
        pass

    # Stores without `supports_arrays` keep a tree as one checkpoint object (expstore.format.checkpoint).
    def _write_tree(self, key: str, skeleton: Skeleton, arrays: dict[str, Any]) -> str:
        return write_flat(self, key, skeleton, arrays)

    def _read_tree(self, key: str, select: list[str] | None, map_location: Any) -> Any:
        return read_state(self, key, select=select, map_location=map_location)[0]


def _bytes_like(data: object, url: str, key: str) -> bytes | memoryview:
    """Accept bytes or any C-contiguous buffer; reject anything else with a TypeError naming the key."""
    if isinstance(data, bytes):
        return data
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"value for key {key!r} in {url!r} must be bytes-like, not {type(data).__name__}"
        ) from None
    if not view.c_contiguous:
        raise TypeError(f"value for key {key!r} in {url!r} must be a C-contiguous buffer")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view
