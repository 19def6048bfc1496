"""The checkpoint codec: one state tree <-> one object in the safetensors layout.

Layout (little-endian throughout)::

    [8 bytes: N, u64]  [N bytes: JSON header, space-padded so 8 + N is a multiple of 8]  [array bytes]

The header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the start of the array bytes, contiguous from 0, in file order, covering the array bytes
exactly) plus ``"__metadata__": {"expstore": "<manifest JSON>"}``. The manifest holds the tree
skeleton of `expstore.format.tree.flatten`, per array its exact numpy dtype, shape, encoding and
crc32c, and the caller's `extra` dict. `safetensors.numpy.load_file` reads the arrays.

Arrays of a dtype safetensors knows (see `NATIVE_DTYPES`) are written natively; any other array
(big-endian, complex, datetime64, strings, structured, ...) as a ``U8`` tensor of its raw bytes, and
the manifest says how to view them. Pickle is used only when the caller opts in, on write and on read.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import mmap
import os
import pickle
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np

from ..errors import CorruptData, KeyNotFound, PickleNotAllowed, StoreError
from ..store.base import Store
from .strict_json import check_json_dict
from .tree import Skeleton, flatten, select_paths, unflatten

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "NATIVE_DTYPES",
    "PickleNotAllowed",
    "check_object",
    "encode",
    "read_checkpoint",
    "read_manifest",
    "read_state",
    "write_checkpoint",
]

FORMAT = "expstore.checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "expstore"
MAX_HEADER_SIZE = 100_000_000  # the limit safetensors itself enforces
MAX_NDIM = 64  # numpy's limit
COALESCE_GAP = 256 * 1024  # select=: neighbouring ranges closer than this are read in one request

# numpy dtype (`dtype.str`) -> safetensors dtype, for the arrays written natively. Every entry is
# known to safetensors since 0.3; complex64 ("C64") only since 0.7, and a dtype a reader does not
# know makes the whole file unreadable there, so complex arrays are written as raw bytes.
NATIVE_DTYPES: dict[str, str] = {
    "|b1": "BOOL",
    "|u1": "U8",
    "|i1": "I8",
    "<u2": "U16",
    "<i2": "I16",
    "<u4": "U32",
    "<i4": "I32",
    "<u8": "U64",
    "<i8": "I64",
    "<f2": "F16",
    "<f4": "F32",
    "<f8": "F64",
}
# What the reader accepts natively: the above plus C64, which a later writer may use.
_READ_NATIVE: dict[str, str] = {st: np_str for np_str, st in NATIVE_DTYPES.items()} | {"C64": "<c8"}
_ST_ITEMSIZE = {st: np.dtype(np_str).itemsize for st, np_str in _READ_NATIVE.items()}
# safetensors dtypes numpy cannot view natively (bfloat16, fp8, ...): tolerated nowhere in our files.

_ENCODINGS = ("native", "raw", "pickle")


# ---- writing -------------------------------------------------------------------------------------


def write_checkpoint(
    store: Store,
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
    fallback = _pickle_leaf if allow_pickle else None
    skeleton, arrays = flatten(tree, name, fallback=fallback)
    return write_flat(store, key, skeleton, arrays, extra, name=name, allow_pickle=allow_pickle)


def write_flat(
    store: Store,
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
    order = _tree_paths(skeleton)
    if set(order) != set(arrays) or len(order) != len(arrays):
        raise ValueError(
            f"the skeleton refers to arrays {sorted(set(order) - set(arrays))!r} that are missing, "
            f"or arrays {sorted(set(arrays) - set(order))!r} are not in the skeleton"
        )
    entries = []
    for index, (path, kind) in enumerate(order.items()):
        entries.append(_encode_array(path, kind, arrays[path], _tensor_name(path, index)))
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


def _encode_array(path: str, kind: str, array: Any, tensor: str) -> _Encoded:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array {path!r}: expected a numpy array, got {type(array).__name__}")
    if kind == "pickle":
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
    raw.flags.writeable = False  # a read-only view (not a copy): google_crc32c wants read-only buffers
    crc = google_crc32c.value(raw) if array.nbytes else 0
    if encoding == "native":
        st_dtype, st_shape = NATIVE_DTYPES[array.dtype.str], list(array.shape)
    else:
        st_dtype, st_shape = "U8", [array.nbytes]
    return _Encoded(
        path=path,
        tensor=tensor,
        encoding=encoding,
        descr=np.lib.format.dtype_to_descr(array.dtype),
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
        descr = np.lib.format.dtype_to_descr(dtype)
        back = _dtype_from_descr(json.loads(json.dumps(descr)))
    except Exception:  # noqa: BLE001 - any failure means "cannot describe it exactly"
        back = None
    if back is None or back != dtype or back.str != dtype.str:
        return f"numpy dtype {dtype!r} has no exact description and cannot be stored without pickle"
    return None


def _handle_unstorable_dtypes(skeleton: Skeleton, arrays: dict[str, np.ndarray], name: str, allow_pickle: bool) -> None:
    """Arrays of dtypes with no exact description (e.g. ml_dtypes' bfloat16): TypeError naming the
    leaf, or pickled whole with `allow_pickle` (their skeleton node becomes a pickle node)."""
    for node, where in _walk_where(skeleton, name):
        if node["t"] != "array":
            continue
        reason = _unstorable_dtype(arrays[node["path"]].dtype)
        if reason is None:
            continue
        if not allow_pickle:
            raise TypeError(f"{where}: {reason}")
        new_node, payload = _pickle_leaf(arrays[node["path"]], node["path"], where)
        node.clear()
        node.update(new_node)
        arrays[new_node["path"]] = payload


def _pickle_leaf(value: Any, path: str, where: str) -> tuple[Skeleton, np.ndarray]:
    """flatten's fallback with `allow_pickle=True`: pickle the leaf into a uint8 payload."""
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise TypeError(f"{where}: cannot pickle a {type(value).__module__}.{type(value).__qualname__}: {exc}") from exc
    return {"t": "pickle", "path": path}, np.frombuffer(data, np.uint8)


# ---- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    path: str
    tensor: str
    encoding: str
    stored_dtype: np.dtype  # shared by every read of this header (`_validated_header`): use `dtype`
    shape: tuple[int, ...]
    begin: int  # absolute offsets in the object
    end: int
    crc: int

    @property
    def dtype(self) -> np.dtype:
        """The array's dtype, a copy of its own when structured: numpy lets a caller rename the
        fields of an array's dtype in place, which must not reach later reads of the same header."""
        return copy.deepcopy(self.stored_dtype) if self.stored_dtype.names is not None else self.stored_dtype


@dataclass(frozen=True)
class _Header:
    """What a valid header says; shared by every read of the same header bytes, so never changed."""

    manifest_json: str
    skeleton: Skeleton  # the manifest's tree, read by `unflatten` only
    extra_json: str
    entries: Mapping[str, _Entry]  # tree order
    data_size: int  # bytes of array data the header describes
    pickled: tuple[str, ...]  # paths of the pickled arrays


@dataclass
class _Layout:
    header: _Header
    data_start: int

    @property
    def entries(self) -> Mapping[str, _Entry]:
        return self.header.entries

    @property
    def data_size(self) -> int:
        return self.header.data_size

    @functools.cached_property
    def manifest(self) -> dict[str, Any]:
        """The whole manifest, parsed for this read alone (the caller may change it)."""
        return json.loads(self.header.manifest_json)

    def extra(self) -> dict[str, Any]:
        """A fresh copy of the manifest's `extra` dict, without parsing the rest of the manifest."""
        return json.loads(self.header.extra_json)


def read_manifest(store: Store, key: str) -> dict[str, Any]:
    """Return the manifest of the checkpoint at `key` (``format``, ``version``, ``tree``, ``arrays``,
    ``extra``), reading only the 8-byte length and the header: two `read_range` requests."""
    return _read_layout(store, key).manifest


def read_checkpoint(
    store: Store,
    key: str,
    *,
    select: list[str] | str | None = None,
    allow_pickle: bool = False,
    writable: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Read the checkpoint at `key`; return ``(tree, manifest)``. Every array read is checked
    against its crc32c (`CorruptData` naming the URL, key and array path).

    `select` (array paths, or prefixes of them) reads only those arrays, by byte range; the others
    are left out of the tree. A checkpoint holding pickled leaves needs `allow_pickle=True`
    (else `PickleNotAllowed`, and nothing is unpickled).

    Arrays are writable by default: on a local disk they are copy-on-write views of a private
    memory map (no copy; writes never reach the file); from other stores they are views of the
    writable buffer `Store.read_buffer` returned (S3 reads into it directly). `writable=False`
    returns read-only views of `Store.read`'s bytes.
    """
    tree, layout = _read_tree(store, key, select, allow_pickle, writable)
    return tree, layout.manifest


def read_state(
    store: Store, key: str, *, select: list[str] | str | None = None, allow_pickle: bool = False
) -> tuple[Any, dict[str, Any]]:
    """`read_checkpoint`, returning ``(tree, manifest's extra)``: it skips parsing the manifest's
    tree and arrays tables again when this process has read the same header before."""
    tree, layout = _read_tree(store, key, select, allow_pickle, writable=True)
    return tree, layout.extra()


def _read_tree(
    store: Store, key: str, select: list[str] | str | None, allow_pickle: bool, writable: bool
) -> tuple[Any, _Layout]:
    local = store.local_path(key)
    if local is not None:
        return _read_local(store, key, local, select, allow_pickle)
    if select is None:
        data = store.read_buffer(key) if writable else store.read(key)
        layout = _parse_object(memoryview(data), store, key)
        _refuse_pickle(layout.header.pickled, allow_pickle, store, key)
        arrays = {
            path: _make_array(data, e.begin, e, store, key, copy=writable) for path, e in layout.entries.items()
        }
    else:
        layout = _read_layout(store, key)
        chosen = select_paths(layout.entries, select)
        _refuse_pickle(layout.header.pickled, allow_pickle, store, key)
        arrays = {}
        for start, group in _ranges([layout.entries[p] for p in chosen]):
            stop = max(e.end for e in group)
            blob = store.read_range(key, start, stop)
            if len(blob) != stop - start:
                raise CorruptData(
                    f"truncated checkpoint: bytes [{start}, {stop}) hold only {len(blob)} bytes", url=store.url, key=key
                )
            for e in group:
                arrays[e.path] = _make_array(blob, e.begin - start, e, store, key, copy=writable)
    return _rebuild(layout, arrays, allow_pickle, store, key), layout


def read_header_bytes(store: Store, key: str) -> tuple[bytes, bytes]:
    """The 8-byte header length and the header of the object at `key`, by two range reads;
    `CorruptData` when either is cut short or the length is not sane."""
    head = store.read_range(key, 0, 8)
    if len(head) < 8:
        raise CorruptData(f"truncated checkpoint: {len(head)} bytes, less than the 8-byte header length", url=store.url, key=key)
    n = _header_length(head, None, store, key)
    header = store.read_range(key, 8, 8 + n)
    if len(header) != n:
        raise CorruptData(f"truncated checkpoint: the header length says {n} bytes, only {len(header)} follow", url=store.url, key=key)
    return head, header


def _read_layout(store: Store, key: str) -> _Layout:
    _, header = read_header_bytes(store, key)
    return _parse_header(header, len(header), None, store, key)


def _parse_object(buf: memoryview, store: Store, key: str) -> _Layout:
    """Validate a whole object held in memory (or mapped) and return its layout."""
    size = len(buf)
    if size < 8:
        raise CorruptData(f"truncated checkpoint: {size} bytes, less than the 8-byte header length", url=store.url, key=key)
    n = _header_length(bytes(buf[:8]), size, store, key)
    return _parse_header(bytes(buf[8 : 8 + n]), n, size - 8 - n, store, key)


def _header_length(head: bytes, size: int | None, store: Store, key: str) -> int:
    n = int.from_bytes(head[:8], "little")
    if n > MAX_HEADER_SIZE:
        raise CorruptData(f"header length {n} is more than the {MAX_HEADER_SIZE} bytes safetensors allows", url=store.url, key=key)
    if size is not None and 8 + n > size:
        raise CorruptData(f"truncated checkpoint: the header length says {n} bytes, the object has {size}", url=store.url, key=key)
    if n < 2:
        raise CorruptData(f"header length {n} is too small for a JSON header", url=store.url, key=key)
    return n


def _parse_header(header: bytes, n: int, data_size: int | None, store: Store, key: str) -> _Layout:
    """Check everything a header and its manifest claim, before any array is touched.

    The checks are a pure function of the header bytes, so their result is memoized by those bytes
    (`_validated_header`): loading leaves of one checkpoint again and again skips them. Each call
    still gets a manifest of its own, parsed afresh, that it may change.
    """
    validate = _validated_header if len(header) <= _MEMO_MAX_HEADER else _validated_header.__wrapped__
    try:
        return _Layout(validate(header, data_size), data_start=8 + n)
    except _InvalidHeader as exc:
        raise CorruptData(str(exc), url=store.url, key=key) from None


class _InvalidHeader(ValueError):
    """What `_validated_header` found wrong; `_parse_header` turns it into `CorruptData` naming the object."""


# Larger headers are validated on every read rather than kept: a parsed skeleton takes several
# times its JSON size, so the memo holds at most a few tens of MiB.
_MEMO_MAX_HEADER = 1 << 20


@functools.lru_cache(maxsize=8)
def _validated_header(header: bytes, data_size: int | None) -> _Header:
    """Validate a header (`_InvalidHeader` says what is wrong) and return what it says."""
    n = len(header)

    def bad(message: str) -> _InvalidHeader:
        return _InvalidHeader(f"not a valid expstore checkpoint: {message}")

    try:
        top = json.loads(header.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise bad(f"the header is not JSON ({exc})") from None
    if not isinstance(top, dict):
        raise bad("the header is not a JSON object")
    meta = top.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("no __metadata__ map of strings in the header")
    if METADATA_KEY not in meta:
        raise bad(f"no {METADATA_KEY!r} manifest in __metadata__ (a plain safetensors file?)")
    try:
        manifest = json.loads(meta[METADATA_KEY], object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise bad(f"the manifest is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise bad(f"the manifest does not say format {FORMAT!r}")
    version = manifest.get("version")
    if type(version) is not int or version < 1:
        raise bad(f"format version {version!r} is not a positive int")
    if version > FORMAT_VERSION:
        raise bad(f"format version {version} is newer than this expstore reads ({FORMAT_VERSION})")
    if not isinstance(manifest.get("tree"), dict) or not isinstance(manifest.get("arrays"), dict):
        raise bad("the manifest has no tree or no arrays table")
    if not isinstance(manifest.get("extra", {}), dict):
        raise bad("the manifest's extra is not an object")

    # The safetensors tensor table: the offsets tile [0, data_end) exactly, like safetensors checks.
    spans: list[tuple[int, int, str]] = []
    for tensor, info in top.items():
        if not isinstance(info, dict):
            raise bad(f"tensor {tensor!r}: entry is not an object")
        st_dtype, st_shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if st_dtype not in _ST_ITEMSIZE:
            raise bad(f"tensor {tensor!r}: dtype {st_dtype!r} is not one expstore writes")
        _check_shape(st_shape, f"tensor {tensor!r}", bad)
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(x) is int for x in offsets)
            or not 0 <= offsets[0] <= offsets[1]
        ):
            raise bad(f"tensor {tensor!r}: data_offsets {offsets!r} are not two ints 0 <= begin <= end")
        if math.prod(st_shape) * _ST_ITEMSIZE[st_dtype] != offsets[1] - offsets[0]:
            raise bad(f"tensor {tensor!r}: {st_dtype} x {st_shape} does not fill data_offsets {offsets}")
        spans.append((offsets[0], offsets[1], tensor))
    spans.sort()
    position = 0
    for begin, end, tensor in spans:
        if begin != position:
            raise bad(f"tensor {tensor!r}: data_offsets start at {begin}, expected {position} (gap or overlap)")
        position = end
    if data_size is not None and position != data_size:
        what = "truncated checkpoint" if position > data_size else "trailing bytes"
        raise _InvalidHeader(f"{what}: the header describes {position} bytes of arrays, the object holds {data_size}")

    # The manifest's arrays table against the tensors and the tree.
    by_tensor = {tensor: (begin, end) for begin, end, tensor in spans}
    entries: dict[str, _Entry] = {}
    seen_tensors: set[str] = set()
    kinds = _tree_kinds(manifest["tree"], bad)
    for path, kind in kinds.items():
        info = manifest["arrays"].get(path)
        if not isinstance(info, dict):
            raise bad(f"array {path!r} of the tree has no entry in the arrays table")
        tensor, encoding, crc = info.get("tensor"), info.get("encoding"), info.get("crc32c")
        if not isinstance(tensor, str) or tensor not in by_tensor or tensor in seen_tensors:
            raise bad(f"array {path!r}: tensor {tensor!r} is missing from the header or used twice")
        seen_tensors.add(tensor)
        if encoding not in _ENCODINGS or (encoding == "pickle") != (kind == "pickle"):
            raise bad(f"array {path!r}: encoding {encoding!r} does not fit a {kind!r} node")
        if type(crc) is not int or not 0 <= crc < 2**32:
            raise bad(f"array {path!r}: crc32c {crc!r} is not a 32-bit unsigned int")
        shape = info.get("shape")
        _check_shape(shape, f"array {path!r}", bad)
        try:
            dtype = _dtype_from_descr(info.get("dtype"))
        except Exception as exc:  # noqa: BLE001 - numpy raises many types for a bad description
            raise bad(f"array {path!r}: dtype {info.get('dtype')!r} is not a numpy dtype description ({exc})") from None
        if dtype.hasobject or dtype.subdtype is not None:
            raise bad(f"array {path!r}: dtype {dtype} is not allowed")
        t = top[tensor]
        begin, end = by_tensor[tensor]
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != end - begin:
            raise bad(f"array {path!r}: {dtype} x {shape} is {nbytes} bytes, its tensor holds {end - begin}")
        if encoding == "native":
            if _READ_NATIVE[t["dtype"]] != dtype.str or t["shape"] != shape:
                raise bad(f"array {path!r}: tensor {t['dtype']} {t['shape']} does not match {dtype} {shape}")
        elif t["dtype"] != "U8" or t["shape"] != [nbytes] or (encoding == "pickle" and dtype != np.uint8):
            raise bad(f"array {path!r}: {encoding} tensor {t['dtype']} {t['shape']} does not match {dtype} {shape}")
        start = 8 + n
        entries[path] = _Entry(path, tensor, encoding, dtype, tuple(shape), start + begin, start + end, crc)
    if set(by_tensor) != seen_tensors:
        raise bad(f"tensors {sorted(set(by_tensor) - seen_tensors)!r} are not in the tree")
    extra_json = json.dumps(manifest.get("extra", {}))
    pickled = tuple(p for p, e in entries.items() if e.encoding == "pickle")
    return _Header(meta[METADATA_KEY], manifest["tree"], extra_json, types.MappingProxyType(entries), position, pickled)


def _check_shape(shape: Any, what: str, bad: Any) -> None:
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(type(d) is int and 0 <= d < 2**63 for d in shape)
        or math.prod(shape) >= 2**63
    ):
        raise bad(f"{what}: shape {shape!r} is not a list of at most {MAX_NDIM} ints >= 0 of sane size")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        names = [k for k, _ in pairs]
        raise ValueError(f"duplicate keys {sorted({k for k in names if names.count(k) > 1})!r}")
    return result


def _tree_kinds(tree: Any, bad: Any) -> dict[str, str]:
    """{path: "array" | "pickle"} of a (possibly hostile) skeleton, in tree order; checks its shape."""
    kinds: dict[str, str] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or not isinstance(node.get("t"), str):
            raise bad("the tree skeleton has a node that is not an object with a type")
        t = node["t"]
        if t in ("array", "pickle"):
            path = node.get("path")
            if not isinstance(path, str) or path in kinds:
                raise bad(f"the tree skeleton names array {path!r} twice or not as a string")
            kinds[path] = t
        elif t == "dict":
            items = node.get("items")
            if not isinstance(items, list) or not all(
                isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) for i in items
            ):
                raise bad("a dict node of the tree skeleton is malformed")
            stack.extend(reversed([child for _, child in items]))
        elif t in ("list", "tuple"):
            if not isinstance(node.get("items"), list):
                raise bad("a list node of the tree skeleton is malformed")
            stack.extend(reversed(node["items"]))
        elif t not in ("none", "bool", "int", "float", "str", "bytes", "npscalar"):
            raise bad(f"unknown node type {t!r} in the tree skeleton")
    return kinds


def _tree_paths(skeleton: Skeleton) -> dict[str, str]:
    def bad(message: str) -> ValueError:
        return ValueError(message)

    return _tree_kinds(skeleton, bad)


def _walk_where(skeleton: Skeleton, name: str) -> list[tuple[Skeleton, str]]:
    """Every node with its place in the tree as flatten names it (`state['opt'][0]`)."""
    found = []
    stack = [(skeleton, name)]
    while stack:
        node, where = stack.pop()
        found.append((node, where))
        if node["t"] == "dict":
            stack.extend((child, f"{where}[{k!r}]") for k, child in node["items"])
        elif node["t"] in ("list", "tuple"):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(node["items"]))
    return found


def _dtype_from_descr(descr: Any) -> np.dtype:
    """Inverse of `np.lib.format.dtype_to_descr` after a JSON round trip (tuples became lists)."""
    if isinstance(descr, str):
        return np.lib.format.descr_to_dtype(descr)
    if not isinstance(descr, list):
        raise ValueError("a dtype description is a string or a list of fields")
    fields = []
    for field in descr:
        if not isinstance(field, list) or not 2 <= len(field) <= 3:
            raise ValueError(f"malformed field {field!r}")
        name = tuple(field[0]) if isinstance(field[0], list) else field[0]  # (title, name)
        fmt = _dtype_from_descr(field[1]) if isinstance(field[1], list) else field[1]
        fields.append((name, fmt, tuple(field[2])) if len(field) == 3 else (name, fmt))
    return np.lib.format.descr_to_dtype(fields)


def _refuse_pickle(pickled: Sequence[str], allow_pickle: bool, store: Store, key: str) -> None:
    """`PickleNotAllowed` naming the `pickled` array paths, unless there are none or `allow_pickle`."""
    if pickled and not allow_pickle:
        raise PickleNotAllowed(
            f"the checkpoint holds pickled leaves {pickled!r}; loading them can run code, "
            "pass allow_pickle=True if you trust it",
            url=store.url,
            key=key,
        )


def check_object(data: Any, store: Store, key: str) -> _Layout:
    """Check a whole object held in memory: its header, and every array against its crc32c
    (nothing is decoded or unpickled). `CorruptData` names what is wrong; returns the layout."""
    layout = _parse_object(memoryview(data), store, key)
    for e in layout.entries.values():
        _checked_bytes(data, e.begin, e, store, key)
    _rebuild(layout, {}, False, store, key)  # the skeleton decodes as a load decodes it (no array is built)
    return layout


def _checked_bytes(buf: Any, offset: int, e: _Entry, store: Store, key: str) -> np.ndarray:
    """The bytes of entry `e` at `offset` of `buf` (a uint8 view), checked against its crc32c."""
    nbytes = e.end - e.begin
    raw = np.frombuffer(buf, np.uint8, count=nbytes, offset=offset) if nbytes else np.empty(0, np.uint8)
    check = raw.view()
    check.flags.writeable = False
    crc = google_crc32c.value(check) if nbytes else 0
    if crc != e.crc:
        raise CorruptData(
            f"checksum mismatch in array {e.path!r}: crc32c {crc:#010x}, the manifest says {e.crc:#010x}",
            url=store.url,
            key=key,
        )
    return raw


def _make_array(buf: Any, offset: int, e: _Entry, store: Store, key: str, *, copy: bool) -> np.ndarray:
    """View entry `e` at `offset` of `buf`, check its crc32c, copy it out if asked."""
    raw = _checked_bytes(buf, offset, e, store, key)
    nbytes = e.end - e.begin
    if e.encoding == "pickle":
        return raw
    if not nbytes:
        return np.empty(e.shape, dtype=e.dtype)
    if copy and not raw.flags.writeable:
        # copy the bytes, not the array: numpy copies structured arrays field by field, dropping padding
        return np.ndarray(shape=e.shape, dtype=e.dtype, buffer=raw.copy())
    return np.ndarray(shape=e.shape, dtype=e.dtype, buffer=buf, offset=offset)


class _Unpickling(Exception):
    """Carries an error raised by `pickle.loads` past `_rebuild`'s handling of malformed skeletons."""


def _rebuild(layout: _Layout, arrays: dict[str, np.ndarray], allow_pickle: bool, store: Store, key: str) -> Any:
    def load_pickle(node: Skeleton, found: Mapping[str, Any]) -> Any:
        if node.get("t") != "pickle" or (node["path"] in found and not allow_pickle):  # never unpickle without opt-in
            raise ValueError(f"unexpected node {node.get('t')!r}")
        if node["path"] not in found:  # a pickled root that was not read (check_object decodes no array)
            return None
        try:
            return pickle.loads(found[node["path"]])
        except Exception as exc:
            raise _Unpickling(node["path"]) from exc

    try:
        return unflatten(layout.header.skeleton, arrays, fallback=load_pickle)
    except _Unpickling as wrapped:
        raise wrapped.__cause__ from None  # type: ignore[misc]
    except (KeyError, ValueError, TypeError, IndexError, OverflowError, RecursionError) as exc:
        raise CorruptData(f"the tree skeleton is malformed: {type(exc).__name__}: {exc}", url=store.url, key=key) from None


def _ranges(entries: list[_Entry]) -> list[tuple[int, list[_Entry]]]:
    """Group entries into read requests: neighbours closer than COALESCE_GAP share one request."""
    groups: list[tuple[int, list[_Entry]]] = []
    stop = -1
    for e in sorted(entries, key=lambda e: e.begin):
        if groups and e.begin - stop <= COALESCE_GAP:
            groups[-1][1].append(e)
            stop = max(stop, e.end)
        else:
            groups.append((e.begin, [e]))
            stop = e.end
    return groups


# ---- local files: a private memory map ----------------------------------------------------------


def _read_local(
    store: Store, key: str, path: str, select: list[str] | str | None, allow_pickle: bool
) -> tuple[Any, _Layout]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise CorruptData(f"truncated checkpoint: {size} bytes, less than the 8-byte header length", url=store.url, key=key)
            # MAP_PRIVATE: arrays are writable copy-on-write views; writes never reach the file.
            mapped = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise KeyNotFound("no value at this key", url=store.url, key=key) from None
    except OSError as exc:
        raise StoreError(f"read failed: {exc}", url=store.url, key=key) from exc
    layout = _parse_object(memoryview(mapped), store, key)
    chosen = list(layout.entries) if select is None else select_paths(layout.entries, select)
    _refuse_pickle(layout.header.pickled, allow_pickle, store, key)
    if select is None and hasattr(mmap, "MADV_WILLNEED"):
        mapped.madvise(mmap.MADV_WILLNEED)
    arrays = {p: _make_array(mapped, layout.entries[p].begin, layout.entries[p], store, key, copy=False) for p in chosen}
    return _rebuild(layout, arrays, allow_pickle, store, key), layout
