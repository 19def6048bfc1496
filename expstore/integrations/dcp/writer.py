"""`StoreWriter`: DCP's `StorageWriter` on any expstore store; one data object per rank, the metadata committed last."""

from __future__ import annotations

import dataclasses
import io
import os
import uuid
from typing import Any

import torch
from torch.distributed.checkpoint.filesystem import CURRENT_DCP_VERSION
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from expstore.errors import PreconditionFailed, StoreError

from .codec import encode_metadata
from .layout import (
    DATA_PREFIX,
    METADATA_KEY,
    CheckpointExists,
    StoredItem,
    bytes_crc32c,
    data_key,
    encode_metadata_object,
)
from .location import StoreLocation

__all__ = ["StoreWriter"]


class StoreWriter(StoreLocation, StorageWriter):
    """Write a DCP checkpoint under `url` (any expstore URL; `storage_options` as for `open_store`).

    Each rank writes one data object of raw tensor bytes (crc32c per item); the coordinator then
    commits `dcp_metadata.json` with `if_absent=True`, so a checkpoint is all there or not at all,
    and a committed one is never overwritten (`CheckpointExists`)."""

    def __init__(self, url: str | os.PathLike[str], **storage_options: Any) -> None:
        super().__init__(url, storage_options)
        self.save_id = uuid.uuid4().hex
        self.rank = 0

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Start a new save (to `checkpoint_id`, a URL, when given): a fresh save id names its objects."""
        self.move_to(checkpoint_id)
        self.save_id = uuid.uuid4().hex

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Open the store; saves without collectives (rank-local metadata) are refused, as nothing would commit them."""
        if not kwargs.get("use_collectives", True):
            raise ValueError(f"StoreWriter({self.url!r}) needs dcp.save(..., use_collectives=True): the coordinator "
                             "commits one metadata object for all ranks")
        self.rank = int(kwargs.get("rank") or 0)
        self.store()

    def storage_meta(self) -> StorageMeta:
        """The URL and save id, which DCP records in the checkpoint's metadata."""
        return StorageMeta(checkpoint_id=self.url, save_id=self.save_id)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        """Nothing to add per rank: the coordinator names every rank's object."""
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        """Before any rank writes, refuse a store without conditional writes or a URL that holds a committed
        checkpoint; give rank i its object key."""
        store = self.store()
        if not store.supports_conditional_writes:
            raise StoreError(f"StoreWriter commits with a conditional write: {store.no_conditional_writes_reason}",
                             url=store.url, key=METADATA_KEY)
        if store.exists(METADATA_KEY):
            raise CheckpointExists(_exists_message(), url=store.url, key=METADATA_KEY)
        return [dataclasses.replace(plan, storage_data=data_key(self.save_id, i)) for i, plan in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        """Write this rank's items back to back as one object (the tensors' own buffers when contiguous on CPU)."""
        key = plan.storage_data
        parts, results, offset = [], [], 0
        for item in plan.items:
            part, dtype, shape = _item_bytes(item, planner)
            length = len(part)
            stored = StoredItem(key=key, offset=offset, length=length, crc32c=bytes_crc32c(part), dtype=dtype, shape=shape)
            parts.append(part)
            results.append(WriteResult(index=item.index, size_in_bytes=length, storage_data=stored))
            offset += length
        self.store().write(key, parts)
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """Commit: write the metadata object if absent, then delete data objects of saves that never committed here."""
        metadata.version = CURRENT_DCP_VERSION
        metadata.storage_data = {wr.index: wr.storage_data for rank_results in results for wr in rank_results}
        metadata.storage_meta = self.storage_meta()
        document = encode_metadata_object(encode_metadata(metadata))
        store = self.store()
        try:
            store.write(METADATA_KEY, document, if_absent=True)
        except PreconditionFailed:
            raise CheckpointExists(_exists_message(), url=store.url, key=METADATA_KEY) from None
        kept = {item.key for item in metadata.storage_data.values()}
        for key in store.list(DATA_PREFIX):
            if key not in kept:
                store.delete(key)


def _exists_message() -> str:
    return ("a DCP checkpoint is already committed here; StoreWriter never overwrites one: save to a new URL, "
            "or remove it first with expstore.integrations.dcp.delete_dcp_checkpoint(url)")


def _item_bytes(item: WriteItem, planner: SavePlanner) -> tuple[Any, str | None, list[int] | None]:
    """(buffer, dtype name, shape) of one write item: DCP's serialized bytes, or a tensor chunk's raw bytes."""
    data = planner.resolve_data(item)
    if item.type == WriteItemType.BYTE_IO:
        if not isinstance(data, io.BytesIO):
            raise TypeError(f"DCP item {item.index.fqn!r}: the planner resolved a {type(data).__name__}, not BytesIO")
        return data.getbuffer(), None, None
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"DCP item {item.index.fqn!r}: the planner resolved a {type(data).__name__}, not a tensor")
    tensor = data.detach()
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.dtype.itemsize == 0:
        raise TypeError(f"DCP item {item.index.fqn!r}: a {tensor.layout} {tensor.dtype} tensor has no raw byte form")
    if tensor.device.type != "cpu":
        tensor = tensor.cpu()
    tensor = tensor.resolve_conj().resolve_neg().contiguous()
    raw = tensor.reshape(-1).view(torch.uint8).numpy()
    return raw, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)
