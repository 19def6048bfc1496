"""`open_store(url)`: map a URL's scheme to a backend module, imported only when first used.

Each backend module exposes `open_url(url, location, **storage_options) -> Store`; adding a
backend is one module plus one line in `BACKENDS`.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from ..errors import BackendUnavailable, InvalidURL
from .base import Store


@dataclass(frozen=True)
class Backend:
    """The module that opens a scheme's URLs and the extra that installs its dependencies."""

    module: str
    extra: str | None = None


BACKENDS: dict[str, Backend] = {
    "file": Backend("expstore.backends.local"),
    "memory": Backend("expstore.backends.memory"),
    "s3": Backend("expstore.backends.s3", extra="s3"),
}
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
    backend = BACKENDS.get(scheme, FSSPEC_FALLBACK)
    module = _import(backend, scheme, url)
    return module.open_url(url, location, **storage_options)


def split_url(url: str) -> tuple[str, str]:
    """Return (scheme, location); a plain path has the scheme `file`."""
    if "://" not in url:
        return "file", url
    scheme, _, location = url.partition("://")
    scheme = scheme.lower()
    if not scheme or not scheme[0].isalpha() or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        raise InvalidURL(f"malformed URL scheme {scheme!r}", url=url)
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
