"""`open_store(url)`: map a URL's scheme to a backend module, imported only when first used.

Each backend module exposes `open_url(url, location, **storage_options) -> Store`; adding a
backend is one module plus one line in `BACKENDS`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import BackendUnavailable, InvalidURL
from .base import Store

__all__ = ["BACKENDS", "Backend", "known_schemes", "open_store", "split_container", "split_url"]


@dataclass(frozen=True)
class Backend:
    """The module that opens a scheme's URLs and the extra that installs its dependencies."""

    module: str
    extra: str | None = None


BACKENDS: dict[str, Backend] = {
    "file": Backend("expstore.backends.local"),
    "memory": Backend("expstore.backends.memory"),
    "s3": Backend("expstore.backends.s3", extra="s3"),
    "h5": Backend("expstore.backends.hdf5", extra="hdf5"),
    "zarr": Backend("expstore.backends.zarr", extra="zarr"),  # also zarr+s3://, zarr+memory://
}
# A local path with a segment ending in one of these opens that file/folder as a container store.
CONTAINER_SUFFIXES = {".h5": "h5", ".hdf5": "h5", ".zarr": "zarr"}
# Any other scheme goes to the generic fsspec backend if fsspec knows the protocol.
FSSPEC_FALLBACK = Backend("expstore.backends.fsspec")


def open_store(url: str | os.PathLike[str] | Store, **storage_options: Any) -> Store:
    """Open the store a URL names: a local path, `file://`, `memory://`, `s3://` or any fsspec protocol.

    Opening never creates anything; the first write does. A `Store` is returned unchanged.
    """
    if isinstance(url, Store):
        if storage_options:
            raise TypeError(f"storage options {sorted(storage_options)} given with an already open store {url.url!r}")
        return url
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise TypeError(f"a store URL must be a str, a path or a Store, not {type(url).__name__}")
    if not url.strip():
        raise InvalidURL("empty store URL", url=url)
    scheme, location = split_url(url)
    if scheme == "file":
        location = _local_location(url, location)
        scheme = _container_scheme(location) or "file"
    inner = ""
    if scheme in ("h5", "zarr") or scheme.startswith("zarr+"):
        location, inner = split_container(location, scheme)
    backend = BACKENDS.get(scheme.partition("+")[0], FSSPEC_FALLBACK)
    module = _import(backend, scheme, url)
    store = module.open_url(url if not inner else url[: len(url) - len(inner) - 1], location, **storage_options)
    if inner:
        from .prefixed import PrefixedStore

        return PrefixedStore(store, inner, url)
    return store


def split_container(location: str, scheme: str) -> tuple[str, str]:
    """Split `runs/exp.h5/checkpoints` into the container `runs/exp.h5` and the key prefix `checkpoints`.

    Without a segment carrying the container's suffix, the whole location is the container.
    """
    kind = scheme.partition("+")[0]
    parts = location.split("/")
    for i, part in enumerate(parts):
        if CONTAINER_SUFFIXES.get(os.path.splitext(part)[1].lower()) == kind:
            return "/".join(parts[: i + 1]), "/".join(p for p in parts[i + 1 :] if p)
    return location, ""


def _container_scheme(path: str) -> str | None:
    for part in path.split("/"):
        kind = CONTAINER_SUFFIXES.get(os.path.splitext(part)[1].lower())
        if kind:
            return kind
    return None


def _local_location(url: str, location: str) -> str:
    """The path a plain path or a `file:///abs/path` URL names."""
    if "://" not in url:
        return location
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise InvalidURL(f"file URLs must be absolute, file:///path (got host {parts.netloc!r})", url=url)
    return unquote(parts.path)


def split_url(url: str) -> tuple[str, str]:
    """Return (scheme, location); a plain path has the scheme `file`."""
    if "://" not in url:
        return "file", url
    scheme, _, location = url.partition("://")
    scheme = scheme.lower()
    if not scheme or not scheme[0].isalpha() or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        raise InvalidURL(f"malformed URL scheme {scheme!r}", url=url)
    if any(part in (".", "..") for part in location.split("/")):
        # object stores do not resolve them: `s3://b/a/../c` would be a literal prefix `a/../c`
        raise InvalidURL("a URL with a scheme may not contain '.' or '..' segments", url=url)
    return scheme, location


def known_schemes() -> list[str]:
    """The schemes expstore opens itself (fsspec protocols come on top)."""
    return sorted(BACKENDS)


def _import(backend: Backend, scheme: str, url: str) -> Any:
    try:
        return importlib.import_module(backend.module)
    except ImportError as exc:
        hint = f'; pip install "expstore[{backend.extra}]"' if backend.extra else ""
        raise BackendUnavailable(f"the {scheme}:// backend needs the missing package {exc.name!r}{hint}", url=url) from exc
