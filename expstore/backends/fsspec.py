"""FsspecStore: any installed fsspec protocol (`gs://`, `az://`, ...) behind the Store protocol.

Writes are one `pipe_file` call, atomic where the filesystem's single-object put is (object
stores); no conditional writes or append, since fsspec has no portable way to express them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fsspec
import fsspec.core

from ..errors import BackendUnavailable, InvalidURL, KeyNotFound
from ..store.base import Store

__all__ = ["FsspecStore", "open_url"]


class FsspecStore(Store):
    """Values are files of an fsspec filesystem under `root` (a path in that filesystem)."""

    def __init__(self, fs: Any, root: str, url: str):
        self.fs = fs
        self.root = root.rstrip("/")
        super().__init__(url)

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _read(self, key: str) -> bytes:
        return self.fs.cat_file(self._checked_path(key))

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        size = self._size(key)
        if start >= size:
            return b""
        return self.fs.cat_file(self._path(key), start=start, end=min(end, size) if end is not None else size)

    def _write(self, key: str, data: bytes | memoryview, if_absent: bool, if_match: str | None) -> str:
        self.fs.pipe_file(self._path(key), bytes(data))
        return self._version(key)

    def _delete(self, key: str) -> None:
        self.fs.rm_file(self._checked_path(key))
        self.fs.invalidate_cache(self._path(key))

    def _exists(self, key: str) -> bool:
        self.fs.invalidate_cache(self._path(key))
        return self.fs.isfile(self._path(key))

    def _size(self, key: str) -> int:
        return int(self._info(key)["size"])

    def _version(self, key: str) -> str:
        return str(self.fs.ukey(self._checked_path(key)))

    def _list(self, prefix: str) -> Iterator[str]:
        folder = prefix.rpartition("/")[0]
        start = self._path(folder) if folder else self.root
        self.fs.invalidate_cache(start)
        if not self.fs.isdir(start):
            return
        base = _fs_path(self.fs, self.root).rstrip("/")
        for path in self.fs.find(start, detail=False):
            path = _fs_path(self.fs, path)
            yield path[len(base) + 1 :] if base else path.lstrip("/")

    def _info(self, key: str) -> dict[str, Any]:
        path = self._path(key)
        self.fs.invalidate_cache(path)
        info = self.fs.info(path)
        if info.get("type") != "file":
            raise KeyNotFound("no value at this key (it is a folder)", url=self.url, key=key)
        return info

    def _checked_path(self, key: str) -> str:
        """The key's path, after an `info()` round trip checking it names a file (fsspec reads folders without complaint)."""
        self._info(key)
        return self._path(key)


def open_url(url: str, location: str, **storage_options: Any) -> FsspecStore:
    """Open any URL whose protocol fsspec knows; name the package to install when it is missing."""
    from ..store.registry import known_schemes

    protocol = url.partition("://")[0].lower()
    try:
        fs_class = fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise InvalidURL(
            f"unknown URL scheme {protocol!r}; expstore knows {', '.join(known_schemes())} "
            "and the protocols of installed fsspec implementations",
            url=url,
        ) from None
    except ImportError as exc:
        raise BackendUnavailable(f"the {protocol}:// protocol is not installed: {exc}", url=url) from exc
    fs = fs_class(**storage_options)
    return FsspecStore(fs, _fs_path(fs, url), url)


def _fs_path(fs: Any, path: str) -> str:
    """`path`, with or without the protocol, in the form `fs` itself uses: fsspec's `strip_protocol`
    of the path as a URL of `fs` (it finds the filesystem class by the URL's protocol)."""
    return fsspec.core.strip_protocol(fs.unstrip_protocol(path))
