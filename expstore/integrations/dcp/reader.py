"""`StoreReader`: DCP's `StorageReader` on any expstore store; every item's crc32c is checked before it is used."""

from __future__ import annotations

import io
import os
import pickle
import uuid
import warnings
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from expstore.errors import CorruptData, KeyNotFound, PickleNotAllowed
from expstore.store import Store

from .codec import decode_metadata, dtype_of
from .layout import (
    METADATA_KEY,
    CheckpointNotFound,
    StoredItem,
    bytes_crc32c,
    decode_metadata_object,
)
from .location import StoreLocation

__all__ = ["StoreReader", "check_item", "read_dcp_metadata"]


class StoreReader(StoreLocation, StorageReader):
    """Read a DCP checkpoint that `StoreWriter` committed under `url` (`storage_options` as for `open_store`).

    DCP's planner stores non-tensor values as `torch.save` bytes and loads them with a full unpickler;
    unless `allow_pickle=True`, such bytes must first load under `torch.load(weights_only=True)`, or
    `PickleNotAllowed` names the entry."""

    def __init__(self, url: str | os.PathLike[str], *, allow_pickle: bool = False, **storage_options: Any) -> None:
        super().__init__(url, storage_options)
        self.allow_pickle = allow_pickle
        self.storage_data: dict[Any, StoredItem] = {}
        self.load_id = uuid.uuid4().hex

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Start a new load (from `checkpoint_id`, a URL, when given)."""
        self.move_to(checkpoint_id)
        self.storage_data = {}
        self.load_id = uuid.uuid4().hex

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """The committed checkpoint's metadata; `CheckpointNotFound` naming the URL when none is committed."""
        if kwargs.get("rank") is not None:
            raise CheckpointNotFound("StoreWriter writes no rank-local DCP metadata", url=self.url, key=METADATA_KEY)
        metadata = read_dcp_metadata(self.store())
        metadata.storage_meta = metadata.storage_meta or StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Keep where each item's bytes are."""
        if not metadata.storage_data:
            raise CorruptData("the DCP metadata names no stored items", url=self.url, key=METADATA_KEY)
        self.storage_data = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        """Unchanged: DCP's plan says which items this rank needs."""
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        """Unchanged."""
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Read, per object, the one byte span that covers this rank's items; check each item, then hand it to DCP."""
        per_key: dict[str, list[tuple[ReadItem, StoredItem]]] = {}
        for request in plan.items:
            stored = self.storage_data[request.storage_index]
            per_key.setdefault(stored.key, []).append((request, stored))
        store = self.store()
        for key, requests in per_key.items():
            start = min(s.offset for _, s in requests)
            end = max(s.offset + s.length for _, s in requests)
            span = memoryview(store.read_range(key, start, end))
            if len(span) != end - start:
                raise CorruptData(f"DCP data object ends at byte {start + len(span)}, the metadata says {end}",
                                  url=store.url, key=key)
            for request, stored in requests:
                part = span[stored.offset - start: stored.offset - start + stored.length]
                check_item(part, stored, request.storage_index.fqn, store)
                if request.type == LoadItemType.BYTE_IO:
                    planner.load_bytes(request, self._checked_bytes(part, request.storage_index.fqn, key))
                else:
                    _load_tensor(request, stored, part, planner, store)
        future: Future[None] = Future()
        future.set_result(None)
        return future

    def _checked_bytes(self, part: memoryview, fqn: str, key: str) -> io.BytesIO:
        """DCP's bytes of entry `fqn`, refused unless they load with weights_only=True (or `allow_pickle`)."""
        if not self.allow_pickle:
            try:
                torch.load(io.BytesIO(part), weights_only=True)
            except pickle.UnpicklingError as exc:
                reason = str(exc).rpartition("WeightsUnpickler error:")[2].strip().partition("\n")[0]
                raise PickleNotAllowed(
                    f"DCP entry {fqn!r} holds a pickled object that torch.load(weights_only=True) refuses ({reason}); "
                    "pass StoreReader(..., allow_pickle=True) if you trust this checkpoint", url=self.url, key=key) from None
        return io.BytesIO(bytes(part))


def read_dcp_metadata(store: Store) -> Metadata:
    """The `Metadata` committed in `store`; `CheckpointNotFound` when there is none, `CorruptData` when it is damaged."""
    try:
        data = store.read(METADATA_KEY)
    except KeyNotFound:
        raise CheckpointNotFound("no committed DCP checkpoint here: its metadata object is missing (a save that did not "
                                 "finish leaves none)", url=store.url, key=METADATA_KEY) from None
    try:
        return decode_metadata(decode_metadata_object(data, store))
    except (KeyError, ValueError, TypeError) as exc:
        raise CorruptData(f"malformed DCP metadata: {type(exc).__name__}: {exc}", url=store.url, key=METADATA_KEY) from None


def check_item(part: memoryview, stored: StoredItem, fqn: str, store: Store) -> None:
    """`CorruptData` naming the object and the entry when an item's bytes no longer match their crc32c."""
    found = bytes_crc32c(part)
    if len(part) != stored.length or found != stored.crc32c:
        raise CorruptData(f"checksum mismatch in DCP entry {fqn!r} (bytes {stored.offset}..{stored.offset + stored.length}): "
                          f"crc32c {found:#010x}, stored {stored.crc32c:#010x}", url=store.url, key=stored.key)


def _load_tensor(request: ReadItem, stored: StoredItem, part: memoryview, planner: LoadPlanner, store: Store) -> None:
    """Copy the requested region of a stored chunk into the tensor DCP resolves for it."""
    if stored.dtype is None or stored.shape is None:
        raise CorruptData(f"DCP entry {request.storage_index.fqn!r} is stored as bytes, DCP asks for a tensor",
                          url=store.url, key=stored.key)
    dtype = dtype_of(stored.dtype)
    if stored.length:
        with warnings.catch_warnings():  # the buffer is read-only; the tensor over it is only copied from
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            chunk = torch.frombuffer(part, dtype=torch.uint8).view(dtype).reshape(stored.shape)
    else:
        chunk = torch.empty(stored.shape, dtype=dtype)
    for dim, (offset, length) in enumerate(zip(request.storage_offsets, request.lengths)):
        chunk = chunk.narrow(dim, offset, length)
    target = planner.resolve_tensor(request).detach()
    if target.size() != chunk.size():
        raise CorruptData(f"DCP entry {request.storage_index.fqn!r}: stored region {tuple(chunk.size())} does not fit "
                          f"the target {tuple(target.size())}", url=store.url, key=stored.key)
    target.copy_(chunk)
    planner.commit_tensor(request, target)
