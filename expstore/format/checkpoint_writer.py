"""Writing checkpoint objects: a flattened tree -> the header and each array's bytes, handed to
the store unjoined; arrays are written natively or as raw bytes, pickled only when the caller opts in."""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint_header import (
    CARRIED_DTYPES,
    FORMAT,
    FORMAT_VERSION,
    MAX_HEADER_SIZE,
    METADATA_KEY,
    NATIVE_DTYPES,
    array_kinds,
)
from .checksum import array_crc32c
from .source import Writable
from .strict_json import check_json_dict
from .tree import Skeleton, dtype_description, dtype_from_description, flatten, walk_skeleton
from .typed_leaves import stored_dtype

__all__ = ["encode", "pickle_leaf", "write_checkpoint", "write_flat"]


def write_checkpoint(
    store: Writable,
    key: str,
    tree: Any,
    *,
    extra: Mapping[str, Any] | None = None,
    allow_pickle: bool = False,
    name: str = "state",
) -> str:
    """Write `tree` as one checkpoint object at `key` with ONE `store.write`; return its version token.

    `extra` is a JSON-able dict stored in the manifest (`TypeError` names a field that is not).
    A leaf the format cannot hold raises `TypeError` naming its path (`state['optimizer']['fn']`)
    and nothing is written, unless `allow_pickle=True`, which pickles such leaves.
    """
    check_json_dict(extra, "extra")
    fallback = pickle_leaf if allow_pickle else None
    skeleton, arrays = flatten(tree, name, fallback=fallback)
    return write_flat(store, key, skeleton, arrays, extra, name=name, allow_pickle=allow_pickle)


def write_flat(
    store: Writable,
    key: str,
    skeleton: Skeleton,
    arrays: dict[str, np.ndarray],
    extra: Mapping[str, Any] | None = None,
    *,
    name: str = "tree",
    allow_pickle: bool = False,
) -> str:
    """Write an already flattened tree as one checkpoint object; the parts go to the store unjoined."""
    _handle_unstorable_dtypes(skeleton, arrays, name, allow_pickle)
    return store.write(key, encode(skeleton, arrays, extra))


def encode(skeleton: Skeleton, arrays: Mapping[str, np.ndarray], extra: Mapping[str, Any] | None = None) -> list[Any]:
    """Encode a flattened tree: return the header (bytes) followed by each array's bytes (read-only,
    C-contiguous uint8 memoryviews of the arrays themselves; only non-contiguous arrays are copied).

    Written back to back they form the checkpoint object. Skeleton nodes ``{"t": "pickle", "path"}``
    mark uint8 payload arrays holding pickles. `TypeError` names an array whose dtype the format
    cannot hold exactly.
    """
    check_json_dict(extra, "extra")
    order = array_kinds(skeleton)
    if set(order) != set(arrays) or len(order) != len(arrays):
        raise ValueError(
            f"the skeleton refers to arrays {sorted(set(order) - set(arrays))!r} that are missing, "
            f"or arrays {sorted(set(arrays) - set(order))!r} are not in the skeleton"
        )
    entries = []
    for index, (path, node) in enumerate(order.items()):
        entries.append(_encode_array(path, node, arrays[path], _tensor_name(path, index)))
    if len({e.tensor for e in entries}) != len(entries):
        raise ValueError("two arrays would get the same tensor name; paths must come from flatten()")
    # File order like safetensors' writers: larger alignment first, so each array starts aligned
    # (the data starts 8-aligned); tree order among equals.
    entries.sort(key=lambda e: -min(e.alignment, 8))
    header: dict[str, Any] = {}
    manifest_arrays: dict[str, Any] = dict.fromkeys(order)  # tree order; filled below
    offset = 0
    tensors: dict[str, Any] = {}
    for e in entries:
        tensors[e.tensor] = {"dtype": e.st_dtype, "shape": e.st_shape, "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
        manifest_arrays[e.path] = {
            "tensor": e.tensor,
            "encoding": e.encoding,
            "dtype": e.descr,
            "shape": list(e.shape),
            "crc32c": e.crc,
        }
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tree": skeleton,
        "arrays": manifest_arrays,
        "extra": dict(extra) if extra is not None else {},
    }
    manifest_text = json.dumps(manifest, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    header["__metadata__"] = {METADATA_KEY: manifest_text}
    header.update(tensors)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER_SIZE:
        raise ValueError(f"the checkpoint header would be {len(text)} bytes, more than safetensors reads ({MAX_HEADER_SIZE})")
    return [len(text).to_bytes(8, "little") + text, *(e.buffer for e in entries)]


@dataclass
class _Encoded:
    """One array as `encode` lays it out: its tensor entry, its manifest entry and its bytes."""

    path: str
    tensor: str
    encoding: str
    descr: Any
    shape: tuple[int, ...]
    st_dtype: str
    st_shape: list[int]
    nbytes: int
    alignment: int
    crc: int
    buffer: memoryview


def _encode_array(path: str, node: Skeleton, array: Any, tensor: str) -> _Encoded:
    """Check one array against its node and describe its tensor, encoding and bytes."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array {path!r}: expected a numpy array, got {type(array).__name__}")
    carried = stored_dtype(node)
    if node["t"] == "pickle":
        if array.dtype != np.uint8 or array.ndim != 1:
            raise TypeError(f"pickle payload {path!r} must be a 1-d uint8 array")
        encoding = "pickle"
    else:
        reason = _unstorable_dtype(array.dtype)
        if reason:
            raise TypeError(f"array {path!r}: {reason}")
        encoding = "native" if array.dtype.str in NATIVE_DTYPES else "raw"
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)  # the only copy: non-contiguous inputs
    raw = array.reshape(-1).view(np.uint8) if array.nbytes else np.empty(0, np.uint8)
    raw = raw.view()
    raw.flags.writeable = False  # a read-only view (not a copy): the buffer written out stays unchanged
    crc = array_crc32c(raw)
    if encoding == "native":
        st_dtype, st_shape = NATIVE_DTYPES[array.dtype.str], list(array.shape)
        if carried in CARRIED_DTYPES:
            if CARRIED_DTYPES[carried] != array.dtype.str:
                raise TypeError(f"array {path!r}: a {carried} leaf must be held by {CARRIED_DTYPES[carried]}, not {array.dtype}")
            st_dtype = carried
    else:
        st_dtype, st_shape = "U8", [array.nbytes]
    return _Encoded(
        path=path,
        tensor=tensor,
        encoding=encoding,
        descr=dtype_description(array.dtype),
        shape=tuple(array.shape),
        st_dtype=st_dtype,
        st_shape=st_shape,
        nbytes=array.nbytes,
        alignment=array.dtype.alignment if encoding != "pickle" else 1,
        crc=crc,
        buffer=memoryview(raw),
    )


def _tensor_name(path: str, index: int) -> str:
    """The safetensors name of an array: its path, unless that clashes with `__metadata__` or is not
    valid UTF-8 (lone surrogates, which safetensors' JSON parser rejects). `%t` never starts a path."""
    if path == "__metadata__":
        return f"%t{index}"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return f"%t{index}"
    return path


def _unstorable_dtype(dtype: np.dtype) -> str | None:
    """Why arrays of `dtype` cannot be stored exactly without pickle, or None if they can."""
    if dtype.hasobject:
        return f"numpy arrays of dtype {dtype} (object) cannot be stored without pickle"
    try:
        back = dtype_from_description(json.loads(json.dumps(dtype_description(dtype))))
    except Exception:  # noqa: BLE001 - any failure means "cannot describe it exactly"
        back = None
    if back is None or back != dtype or back.str != dtype.str:
        return f"numpy dtype {dtype!r} has no exact description and cannot be stored without pickle"
    return None


def _handle_unstorable_dtypes(skeleton: Skeleton, arrays: dict[str, np.ndarray], name: str, allow_pickle: bool) -> None:
    """Arrays of dtypes with no exact description (e.g. ml_dtypes' bfloat16): TypeError naming the
    leaf, or pickled whole with `allow_pickle` (their skeleton node becomes a pickle node)."""
    for node, keys in walk_skeleton(skeleton):
        if node["t"] != "array":
            continue
        reason = _unstorable_dtype(arrays[node["path"]].dtype)
        if reason is None:
            continue
        where = name + "".join(f"[{k!r}]" for k in keys)  # the place as flatten names it: state['opt'][0]
        if not allow_pickle:
            raise TypeError(f"{where}: {reason}")
        new_node, payload = pickle_leaf(arrays[node["path"]], node["path"], where)
        node.clear()
        node.update(new_node)
        arrays[new_node["path"]] = payload


def pickle_leaf(value: Any, path: str, where: str) -> tuple[Skeleton, np.ndarray]:
    """flatten's fallback with `allow_pickle=True`: pickle the leaf into a uint8 payload."""
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"{where}: cannot pickle a {type(value).__module__}.{type(value).__qualname__}: {exc}") from exc
    return {"t": "pickle", "path": path}, np.frombuffer(data, np.uint8)

