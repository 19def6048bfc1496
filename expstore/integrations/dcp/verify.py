"""Check and remove whole DCP checkpoints that `StoreWriter` wrote (the `expstore` CLI knows only its own checkpoints)."""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from expstore.errors import CorruptData
from expstore.store import open_store

from .layout import DATA_PREFIX, METADATA_KEY, CheckpointNotFound, StoredItem, checkpoint_url
from .reader import check_item, read_dcp_metadata

__all__ = ["delete_dcp_checkpoint", "verify_dcp_checkpoint"]


def verify_dcp_checkpoint(url: str | os.PathLike[str], **storage_options: Any) -> dict[str, Any]:
    """Re-read every object of the checkpoint at `url` and check each item's crc32c and the objects' sizes.

    Returns a summary (`objects`, `items`, `bytes`, `leftovers`: data objects of saves that never
    committed here); raises `CheckpointNotFound` when nothing is committed, `CorruptData` naming the
    first object that fails."""
    with open_store(checkpoint_url(url), **storage_options) as store:
        metadata = read_dcp_metadata(store)
        per_key: dict[str, list[tuple[str, StoredItem]]] = defaultdict(list)
        for index, stored in metadata.storage_data.items():
            per_key[stored.key].append((index.fqn, stored))
        total = 0
        for key, items in sorted(per_key.items()):
            items.sort(key=lambda pair: pair[1].offset)
            data = memoryview(store.read_buffer(key))
            end = 0
            for fqn, stored in items:
                if stored.offset != end:
                    raise CorruptData(f"DCP entry {fqn!r} starts at byte {stored.offset}, expected {end}", url=store.url, key=key)
                end += stored.length
                check_item(data[stored.offset:end], stored, fqn, store)
            if len(data) != end:
                raise CorruptData(f"DCP data object holds {len(data)} bytes, its items {end}", url=store.url, key=key)
            total += end
        leftovers = [key for key in store.list(DATA_PREFIX) if key not in per_key]
        return {"url": store.url, "objects": len(per_key), "items": len(metadata.storage_data), "bytes": total,
                "leftovers": leftovers}


def delete_dcp_checkpoint(url: str | os.PathLike[str], **storage_options: Any) -> list[str]:
    """Remove the checkpoint at `url`, metadata first (so it stops existing at once), then every data
    object; returns the keys removed. `CheckpointNotFound` when there is nothing of one there."""
    with open_store(checkpoint_url(url), **storage_options) as store:
        keys = ([METADATA_KEY] if store.exists(METADATA_KEY) else []) + store.list(DATA_PREFIX)
        if not keys:
            raise CheckpointNotFound("no DCP checkpoint here", url=store.url, key=METADATA_KEY)
        for key in keys:
            store.delete(key)
        return keys
