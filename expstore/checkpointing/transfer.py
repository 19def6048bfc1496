"""Copies of checkpoints between stores: `backup_checkpoint`, and the CLI's `cp` through it.

Between two bytes stores a checkpoint's objects are copied unread once every checksum checks out
(nothing is decoded or unpickled); to or from an array-native store (HDF5, Zarr) it is loaded and
saved again, keeping its iteration, timestamp, metadata and first tag. The copy is then named in
the target's index, never pruned by the copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..store.base import Store
from ..store.locate import opened_store
from .manager import CheckpointManager
from .names import CKPT_RE, check_iteration, split_checkpoint_url, strict_json_metadata
from .reading import kind_of

__all__ = ["backup_checkpoint", "copy_checkpoint"]


def backup_checkpoint(
    ref: Any,
    backup_url: Any,
    *,
    source_options: Mapping[str, Any] | None = None,
    allow_pickle: bool = False,
    **storage_options: Any,
) -> str:
    """Copy the checkpoint at `ref` into the checkpoint directory `backup_url` (any store) and add it
    to the index there (never pruned by this call); return the new ref.

    `storage_options` apply to the backup store, `source_options` to the store of `ref`.
    Between two bytes stores the object's bytes are copied once its header and every array's
    crc32c check out (`CorruptData` otherwise, and nothing is written; nothing is decoded or
    unpickled); to or from an array-native store the checkpoint is loaded and saved again.
    """
    if isinstance(ref, Mapping):
        ref = ref["path"]
    src_url, key = split_checkpoint_url(ref)
    experiment = CKPT_RE.match(key)["exp"]  # type: ignore[index]
    with opened_store(src_url, **dict(source_options or {})) as src, CheckpointManager(
        backup_url, experiment, keep_last_n=None, allow_pickle=allow_pickle, **storage_options
    ) as dest:
        return copy_checkpoint(src, key, dest, allow_pickle)


def copy_checkpoint(src: Store, key: str, dest: CheckpointManager, allow_pickle: bool) -> str:
    """Copy the checkpoint at `key` in `src` into `dest`'s store and index; return its ref there."""
    kind = kind_of(key)
    if kind.copies_bytes(src, dest.store):
        extra = kind.copy_bytes(src, key, dest.store)
        entry = {
            "iteration": extra.get("iteration", int(CKPT_RE.match(key)["it"])),  # type: ignore[index]
            "key": key,
            "timestamp": extra.get("timestamp"),
            "tags": list(extra.get("tags") or []),
            "metadata": extra.get("metadata") or {},
            **kind.index_fields(extra),
        }
        dest.index.commit(entry)
        return dest.ref_for(key)
    loaded, tags = kind.load_whole(src, key, allow_pickle)
    dest.wait_until_finished()
    iteration = check_iteration(loaded["iteration"])
    meta = strict_json_metadata(loaded["metadata"])
    ref, _ = dest.write_and_commit(loaded["state"], iteration, meta, tags[0] if tags else None, timestamp=loaded.get("timestamp"))
    return ref
