"""What can be done with the checkpoint at a key, whichever kind it is: one object (a tree of
datasets on array-native stores) or a sharded checkpoint named by its manifest. `kind_of(key)` is
the one place that tells them apart; the manager, copies and the CLI go through it."""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import CorruptData, StoreError
from ..format.checkpoint import check_object, read_manifest, read_state
from ..store.base import Store
from . import sharded
from .names import MANIFEST, is_manifest_key

__all__ = ["CheckpointKind", "kind_of", "load_object", "object_manifest", "objects_of", "verify_object"]


class CheckpointKind(Protocol):
    """How one kind of checkpoint is read, checked, listed and copied."""

    def load(
        self,
        store: Store,
        key: str,
        *,
        select: list[str] | str | None,
        allow_pickle: bool,
        rank: int,
        world_size: int | None,
        map_location: Any = None,
    ) -> dict[str, Any]:
        """The loaded-checkpoint dict ``{"iteration", "timestamp", "state", "metadata", ...}``, tensors placed
        by `map_location` as with `torch.load`."""

    def load_whole(self, store: Store, key: str, allow_pickle: bool) -> tuple[dict[str, Any], list[str]]:
        """The whole checkpoint as one plain state, and its tags: what a copy saves again."""

    def verify(self, store: Store, key: str) -> None:
        """Raise unless the checkpoint reads whole and passes its checksums (never unpickles)."""

    def objects(self, store: Store, key: str) -> list[str]:
        """Every object of the checkpoint, the one the index names last (what deleting it removes)."""

    def manifest(self, store: Store, key: str) -> dict[str, Any]:
        """The codec manifest (skeleton, arrays, extra) of the checkpoint on a bytes store, from its header."""

    def copies_bytes(self, src: Store, dest: Store) -> bool:
        """True when a copy from `src` to `dest` copies stored bytes (else: load and save again)."""

    def copy_bytes(self, src: Store, key: str, dest: Store) -> dict[str, Any]:
        """Copy the checkpoint's objects unread after checking every checksum; return its `extra`."""

    def index_fields(self, extra: dict[str, Any]) -> dict[str, Any]:
        """Index entry fields this kind adds to the common ones, from the checkpoint's `extra`."""


class SingleObject:
    """A checkpoint that is one object on a bytes store, or one tree on an array-native store."""

    def load(
        self,
        store: Store,
        key: str,
        *,
        select: list[str] | str | None,
        allow_pickle: bool,
        rank: int,
        world_size: int | None,
        map_location: Any = None,
    ) -> dict[str, Any]:
        if isinstance(select, str):
            select = [select]
        if store.supports_arrays:
            tree = store.read_tree(
                key, select=None if select is None else [f"state/{p}" for p in select], map_location=map_location
            )
            if not isinstance(tree, dict) or "state" not in tree:
                raise CorruptData("not a checkpoint tree (no 'state')", url=store.url, key=key)
            info = tree
        else:
            state, info = read_state(store, key, select=select, allow_pickle=allow_pickle, map_location=map_location)
            info["state"] = state
        return {
            "iteration": info.get("iteration"),
            "timestamp": info.get("timestamp"),
            "state": info["state"],
            "metadata": info.get("metadata") or {},
        }

    def load_whole(self, store: Store, key: str, allow_pickle: bool) -> tuple[dict[str, Any], list[str]]:
        loaded = self.load(store, key, select=None, allow_pickle=allow_pickle, rank=0, world_size=None)
        return loaded, _tags_of(store, key)

    def verify(self, store: Store, key: str) -> None:
        if store.supports_arrays:
            store.read_tree(key, map_location="cpu")  # a checkpoint saved on a GPU checks on any machine
            return
        check_object(store.read(key), store, key)

    def objects(self, store: Store, key: str) -> list[str]:
        return [key]

    def manifest(self, store: Store, key: str) -> dict[str, Any]:
        return read_manifest(store, key)

    def copies_bytes(self, src: Store, dest: Store) -> bool:
        return not src.supports_arrays and not dest.supports_arrays

    def copy_bytes(self, src: Store, key: str, dest: Store) -> dict[str, Any]:
        data = src.read(key)
        extra = check_object(data, src, key).extra()  # never copy garbage: header and every crc32c
        dest.write(key, data)
        return extra

    def index_fields(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {}


class Sharded:
    """A sharded checkpoint: a folder of shards (one per rank) and the manifest the index names."""

    def load(
        self,
        store: Store,
        key: str,
        *,
        select: list[str] | str | None,
        allow_pickle: bool,
        rank: int,
        world_size: int | None,
        map_location: Any = None,
    ) -> dict[str, Any]:
        return sharded.load(
            store, key, rank=rank, world_size=world_size, select=select, allow_pickle=allow_pickle, map_location=map_location
        )

    def load_whole(self, store: Store, key: str, allow_pickle: bool) -> tuple[dict[str, Any], list[str]]:
        loaded = sharded.assemble(store, key, allow_pickle)
        return loaded, loaded["tags"]

    def verify(self, store: Store, key: str) -> None:
        sharded.verify(store, key)

    def objects(self, store: Store, key: str) -> list[str]:
        return sorted(store.list(key[: -len(MANIFEST)]), key=lambda k: k == key)

    def manifest(self, store: Store, key: str) -> dict[str, Any]:
        return sharded.first_shard_manifest(store, key)  # shard 0's, checked to be the shard the manifest pins

    def copies_bytes(self, src: Store, dest: Store) -> bool:
        return not dest.supports_arrays  # HDF5 / Zarr hold no sharded checkpoints: the whole state is saved as one

    def copy_bytes(self, src: Store, key: str, dest: Store) -> dict[str, Any]:
        return sharded.copy_shards(src, key, dest)

    def index_fields(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {"world_size": extra.get("world_size")}


_SINGLE, _SHARDED = SingleObject(), Sharded()


def kind_of(key: str) -> CheckpointKind:
    """The kind of the checkpoint the index names by `key`."""
    return _SHARDED if is_manifest_key(key) else _SINGLE


def load_object(
    store: Store,
    key: str,
    *,
    select: list[str] | str | None = None,
    allow_pickle: bool = False,
    rank: int = 0,
    world_size: int | None = None,
    map_location: Any = None,
) -> dict[str, Any]:
    """Read the checkpoint at `key` into the loaded-checkpoint dict (a sharded one as rank `rank`
    of `world_size`, default: of the world size it was saved with), tensors placed by `map_location`."""
    return kind_of(key).load(
        store, key, select=select, allow_pickle=allow_pickle, rank=rank, world_size=world_size, map_location=map_location
    )


def verify_object(store: Store, key: str) -> None:
    """Raise if the checkpoint at `key` (a sharded one: every shard) cannot be read whole or fails
    a checksum (never unpickles)."""
    kind_of(key).verify(store, key)


def objects_of(store: Store, key: str) -> list[str]:
    """Every object of the checkpoint at `key`, the manifest of a sharded one last."""
    return kind_of(key).objects(store, key)


def object_manifest(store: Store, key: str) -> dict[str, Any]:
    """The codec manifest of the checkpoint at `key` on a bytes store (a sharded one: shard 0's),
    read from its header alone: what `expstore show` describes."""
    return kind_of(key).manifest(store, key)


def _tags_of(store: Store, key: str) -> list[str]:
    """Tags recorded in the checkpoint itself (bytes stores: manifest; array stores: the tree)."""
    try:
        if store.supports_arrays:
            return list(store.read_tree(key).get("tags") or [])
        return list((read_manifest(store, key).get("extra") or {}).get("tags") or [])
    except (StoreError, AttributeError):
        return []
