"""Where a DCP checkpoint's objects live under its URL, what the metadata object holds, and its errors."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np

from expstore.errors import CorruptData, KeyNotFound, PreconditionFailed
from expstore.format.checksum import array_crc32c
from expstore.store import Store, known_schemes

__all__ = [
    "DATA_PREFIX",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "CheckpointExists",
    "CheckpointNotFound",
    "StoredItem",
    "bytes_crc32c",
    "checkpoint_url",
    "data_key",
    "decode_metadata_object",
    "encode_metadata_object",
    "is_supported_url",
]

METADATA_KEY = "dcp_metadata.json"  # written last, with if_absent: its presence is the commit
DATA_PREFIX = "dcp_data/"  # one object per rank and save: dcp_data/<save_id>-rank<rank>.distcp
FORMAT = "expstore-dcp"
FORMAT_VERSION = 1


class CheckpointExists(PreconditionFailed, FileExistsError):
    """A DCP checkpoint is already committed at the URL a save was pointed at."""


class CheckpointNotFound(KeyNotFound):
    """No committed DCP checkpoint at a URL (nothing there, or a save that never finished)."""


@dataclass(frozen=True)
class StoredItem:
    """Where one write item's bytes are (object key, offset, length), their crc32c, and for a tensor
    chunk its dtype name and shape (the bytes are the chunk in C order); dtype None: DCP's bytes."""

    key: str
    offset: int
    length: int
    crc32c: int
    dtype: str | None = None
    shape: list[int] | None = None


def checkpoint_url(checkpoint_id: str | os.PathLike[str]) -> str:
    """The URL string of a DCP `checkpoint_id` (a URL, a path or a path-like)."""
    url = os.fspath(checkpoint_id)
    if not isinstance(url, str) or not url:
        raise ValueError(f"a DCP checkpoint id must be a non-empty URL or path, got {checkpoint_id!r}")
    return url


def is_supported_url(checkpoint_id: object) -> bool:
    """Whether `checkpoint_id` is a path or a URL whose scheme expstore opens (checked without opening it)."""
    if not isinstance(checkpoint_id, (str, os.PathLike)):
        return False
    url = os.fspath(checkpoint_id)
    if not isinstance(url, str) or not url:
        return False
    if "://" not in url:
        return True
    scheme = url.partition("://")[0].lower()
    # an fsspec protocol that is installed opens through the generic fsspec store
    return scheme in known_schemes() or scheme in fsspec.available_protocols()


def data_key(save_id: str, rank: int) -> str:
    """The key of rank `rank`'s data object of the save `save_id`."""
    return f"{DATA_PREFIX}{save_id}-rank{rank:05d}.distcp"


def bytes_crc32c(data: Any) -> int:
    """crc32c of a buffer's bytes (no copy)."""
    return array_crc32c(np.frombuffer(data, np.uint8))


def _canonical(value: Any) -> bytes:
    """The one byte form of a JSON value that its checksum covers."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def encode_metadata_object(metadata: dict[str, Any]) -> bytes:
    """The bytes of the metadata object: JSON naming the format, the metadata and its crc32c."""
    body = _canonical(metadata)
    return _canonical({"format": FORMAT, "format_version": FORMAT_VERSION, "crc32c": bytes_crc32c(body),
                       "metadata": metadata})


def decode_metadata_object(data: bytes, store: Store) -> dict[str, Any]:
    """The metadata a metadata object holds; `CorruptData` (naming it) for bad JSON, another format or a bad crc."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptData(f"DCP metadata object is not valid JSON: {exc}", url=store.url, key=METADATA_KEY) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CorruptData(f"not an {FORMAT} metadata object", url=store.url, key=METADATA_KEY)
    if document.get("format_version") != FORMAT_VERSION:
        raise CorruptData(f"{FORMAT} format version {document.get('format_version')!r} is not {FORMAT_VERSION}",
                          url=store.url, key=METADATA_KEY)
    metadata = document.get("metadata")
    found = bytes_crc32c(_canonical(metadata))
    if found != document.get("crc32c"):
        raise CorruptData(f"checksum mismatch in the DCP metadata: crc32c {found:#010x}, stored {document.get('crc32c')!r}",
                          url=store.url, key=METADATA_KEY)
    return metadata
