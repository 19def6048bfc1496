"""The Zarr backend: a Zarr 3 store (local, memory or S3) whose values switch by one small pointer."""

from __future__ import annotations

from typing import Any

from ...errors import InvalidURL
from .local import LocalZarrStore
from .memory import open_memory
from .store import ARRAY_OPTIONS, ZarrStore

__all__ = ["open_url"]


def open_url(url: str, location: str, **storage_options: Any) -> ZarrStore:
    """Open `run.zarr`, `zarr:///abs/run.zarr`, `zarr+memory://name` or `zarr+s3://bucket/run.zarr`.

    `compressors=`, `filters=`, `serializer=`, `chunks=`, `shards=`, `config=` go to
    `zarr.create_array` for every array written; for `zarr+s3` the other options go to
    `s3fs.S3FileSystem` (endpoint_url, key, secret, client_kwargs, config_kwargs, ...).
    """
    scheme = url.partition("://")[0].lower() if "://" in url else "file"
    kind = scheme.partition("+")[2] or "file"
    if kind in ("file", ""):
        array_options, _ = _split_options(url, storage_options, allow_other=False)
        path = location
        if scheme == "zarr":
            path = "/" + location.lstrip("/") if not location.startswith("/") else location
        return LocalZarrStore(path, url, array_options)
    if kind == "memory":
        array_options, _ = _split_options(url, storage_options, allow_other=False)
        return open_memory(location.strip("/"), url, array_options)
    if kind == "s3":
        array_options, other = _split_options(url, storage_options, allow_other=True)
        from .s3 import S3ZarrStore  # s3fs and botocore load only for zarr+s3

        return S3ZarrStore(location, url, array_options, other)
    raise InvalidURL(f"unknown Zarr storage {kind!r}: use a path, zarr+memory:// or zarr+s3://", url=url)


def _split_options(url: str, storage_options: dict[str, Any], allow_other: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the array options, the rest); a TypeError naming the rest when only array options are allowed."""
    array_options = {k: storage_options.pop(k) for k in list(storage_options) if k in ARRAY_OPTIONS}
    if storage_options and not allow_other:
        raise TypeError(
            f"unknown storage options {sorted(storage_options)} for {url!r}; a Zarr store takes {sorted(ARRAY_OPTIONS)}"
        )
    return array_options, storage_options
