"""DCP's `Metadata` dataclasses as plain JSON values and back, so a checkpoint's metadata is read without pickle."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    StorageMeta,
    TensorProperties,
    TensorStorageMetadata,
)

from .layout import DATA_PREFIX, StoredItem

__all__ = ["decode_metadata", "decode_value", "dtype_of", "encode_metadata", "encode_value"]

_MEMORY_FORMATS = {"contiguous_format": torch.contiguous_format, "channels_last": torch.channels_last,
                   "preserve_format": torch.preserve_format}
_ENCODED_FIELDS = {"state_dict_metadata", "planner_data", "storage_data", "storage_meta", "version"}


def encode_metadata(metadata: Metadata) -> dict[str, Any]:
    """The JSON value of `metadata`; `TypeError` names a field that holds what JSON cannot say."""
    unknown = [f.name for f in dataclasses.fields(metadata)
               if f.name not in _ENCODED_FIELDS and getattr(metadata, f.name) is not None]
    if unknown:
        raise TypeError(f"DCP Metadata field(s) {unknown} are not known to expstore's JSON encoding")
    return {
        "version": metadata.version,
        "state_dict": {fqn: _encode_storage_type(fqn, md) for fqn, md in metadata.state_dict_metadata.items()},
        "planner_data": encode_value(metadata.planner_data, "Metadata.planner_data"),
        "storage_data": [_encode_stored(index, item) for index, item in (metadata.storage_data or {}).items()],
        "storage_meta": _encode_storage_meta(metadata.storage_meta),
    }


def decode_metadata(value: dict[str, Any]) -> Metadata:
    """The `Metadata` that `encode_metadata` encoded as `value` (`KeyError`/`ValueError` on a malformed one)."""
    storage_data = {}
    for entry in value["storage_data"]:
        index, item = _decode_stored(entry)
        storage_data[index] = item
    return Metadata(
        state_dict_metadata={fqn: _decode_storage_type(md) for fqn, md in value["state_dict"].items()},
        planner_data=decode_value(value["planner_data"]),
        storage_data=storage_data,
        storage_meta=_decode_storage_meta(value["storage_meta"]),
        version=value["version"],
    )


def _encode_storage_type(fqn: str, md: Any) -> dict[str, Any]:
    """One entry of `state_dict_metadata`: a tensor's properties, size and chunks, or a bytes marker."""
    if isinstance(md, BytesStorageMetadata):
        return {"type": "bytes"}
    if not isinstance(md, TensorStorageMetadata):
        raise TypeError(f"Metadata.state_dict_metadata[{fqn!r}]: a {type(md).__qualname__} is not known to expstore")
    props = md.properties
    memory_format = next((name for name, fmt in _MEMORY_FORMATS.items() if fmt == props.memory_format), None)
    if memory_format is None:
        raise TypeError(f"Metadata.state_dict_metadata[{fqn!r}]: memory format {props.memory_format} is not known")
    return {
        "type": "tensor",
        "dtype": _dtype_name(props.dtype),
        "layout": str(props.layout).removeprefix("torch."),
        "requires_grad": props.requires_grad,
        "memory_format": memory_format,
        "pin_memory": props.pin_memory,
        "size": list(md.size),
        "chunks": [{"offsets": list(c.offsets), "sizes": list(c.sizes)} for c in md.chunks],
    }


def _decode_storage_type(value: dict[str, Any]) -> Any:
    """The `TensorStorageMetadata` or `BytesStorageMetadata` of one encoded entry."""
    if value["type"] == "bytes":
        return BytesStorageMetadata()
    if value["type"] != "tensor":
        raise ValueError(f"unknown storage type {value['type']!r}")
    layout = getattr(torch, value["layout"])
    if not isinstance(layout, torch.layout):
        raise ValueError(f"unknown layout {value['layout']!r}")
    properties = TensorProperties(dtype=dtype_of(value["dtype"]), layout=layout, requires_grad=bool(value["requires_grad"]),
                                  memory_format=_MEMORY_FORMATS[value["memory_format"]],
                                  pin_memory=bool(value["pin_memory"]))
    chunks = [ChunkStorageMetadata(offsets=torch.Size(c["offsets"]), sizes=torch.Size(c["sizes"])) for c in value["chunks"]]
    return TensorStorageMetadata(properties=properties, size=torch.Size(value["size"]), chunks=chunks)


def _encode_stored(index: MetadataIndex, item: Any) -> dict[str, Any]:
    """One `storage_data` entry: the item's index (fqn, chunk offset, hint) and where its bytes are."""
    if not isinstance(item, StoredItem):
        raise TypeError(f"Metadata.storage_data[{index.fqn!r}]: a {type(item).__qualname__} is not a StoreWriter item")
    offset = None if index.offset is None else list(index.offset)
    return {"index": {"fqn": index.fqn, "offset": offset, "hint": index.index}, "item": dataclasses.asdict(item)}


def _decode_stored(entry: dict[str, Any]) -> tuple[MetadataIndex, StoredItem]:
    """The (index, item) pair of one encoded `storage_data` entry; `ValueError` when the item names a key
    outside the data objects, or a length that its dtype and shape contradict (checked before any read)."""
    index = MetadataIndex(entry["index"]["fqn"], entry["index"]["offset"], entry["index"]["hint"])
    item = StoredItem(**{f.name: entry["item"][f.name] for f in dataclasses.fields(StoredItem)})
    where = f"storage_data entry {index.fqn!r}"
    if not isinstance(item.key, str) or not item.key.startswith(DATA_PREFIX):
        raise ValueError(f"{where} names the key {item.key!r}, which is not a data object ({DATA_PREFIX}...)")
    if not all(isinstance(v, int) and v >= 0 for v in (item.offset, item.length, item.crc32c)):
        raise ValueError(f"{where}: offset, length and crc32c must be ints >= 0")
    if item.dtype is not None:
        shape = item.shape if isinstance(item.shape, list) else [-1]
        if not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ValueError(f"{where}: bad shape {item.shape!r}")
        expected = math.prod(shape) * dtype_of(item.dtype).itemsize
        if expected != item.length:
            raise ValueError(f"{where}: {item.length} bytes stored, a {item.dtype} chunk of shape {shape} has {expected}")
    return index, item


def _encode_storage_meta(meta: StorageMeta | None) -> dict[str, Any] | None:
    """`StorageMeta` as a dict (a path-like checkpoint id becomes its str)."""
    if meta is None:
        return None
    checkpoint_id = meta.checkpoint_id
    return {"checkpoint_id": None if checkpoint_id is None else os.fspath(checkpoint_id), "save_id": meta.save_id,
            "load_id": meta.load_id, "modules": list(meta.modules)}


def _decode_storage_meta(value: dict[str, Any] | None) -> StorageMeta | None:
    """The `StorageMeta` of an encoded one."""
    return None if value is None else StorageMeta(**value)


def _dtype_name(dtype: torch.dtype) -> str:
    """`torch.bfloat16` -> `"bfloat16"`."""
    return str(dtype).removeprefix("torch.")


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype called `name` (`"bfloat16"`); `ValueError` for any other attribute of torch."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype {name!r}")
    return dtype


def encode_value(value: Any, where: str) -> Any:
    """A tagged JSON value of plain data (scalars, str, list, tuple, dict, torch.Size): every container
    is a one-key object naming its type, so tuples and int dict keys come back as they were."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, torch.Size):
        return {"size": [int(v) for v in value]}
    if isinstance(value, (list, tuple)):
        items = [encode_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    if isinstance(value, dict):
        return {"dict": [[encode_value(k, f"{where} key {k!r}"), encode_value(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    raise TypeError(f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored without pickle")


def decode_value(value: Any) -> Any:
    """The plain data that `encode_value` encoded."""
    if not isinstance(value, dict):
        return value
    (tag, items), = value.items()
    if tag == "list":
        return [decode_value(v) for v in items]
    if tag == "tuple":
        return tuple(decode_value(v) for v in items)
    if tag == "dict":
        return {decode_value(k): decode_value(v) for k, v in items}
    if tag == "size":
        return torch.Size(items)
    if tag == "float":
        return float(items)
    raise ValueError(f"unknown tag {tag!r}")
