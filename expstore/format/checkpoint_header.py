"""The checkpoint header: its constants, and the validation of everything a header claims
before any array is touched (a pure function of the header bytes, memoized by them)."""

from __future__ import annotations

import copy
import functools
import json
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CorruptData
from .source import Readable
from .tree import NODE_TYPES, Skeleton, dtype_from_description, leaf_arrays, walk_skeleton
from .typed_leaves import stored_dtype

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_HEADER_SIZE",
    "METADATA_KEY",
    "NATIVE_DTYPES",
    "CARRIED_DTYPES",
    "ArrayEntry",
    "CheckpointLayout",
    "array_kinds",
    "parse_header",
    "parse_object",
    "read_header_bytes",
    "read_layout",
]

FORMAT = "expstore.checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "expstore"
MAX_HEADER_SIZE = 100_000_000  # the limit safetensors itself enforces
MAX_NDIM = 64  # numpy's limit

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
# safetensors dtypes numpy lacks, which hold typed leaves (`typed_leaves`): the unsigned ints viewing their bytes.
CARRIED_DTYPES: dict[str, str] = {
    "BF16": "<u2",
    "F8_E4M3": "|u1",
    "F8_E5M2": "|u1",
    "F8_E4M3FNUZ": "|u1",
    "F8_E5M2FNUZ": "|u1",
    "F8_E8M0": "|u1",
}
# What the reader accepts natively: the above plus C64, which a later writer may use.
_READ_NATIVE: dict[str, str] = {st: np_str for np_str, st in NATIVE_DTYPES.items()} | CARRIED_DTYPES | {"C64": "<c8"}
_ST_ITEMSIZE = {st: np.dtype(np_str).itemsize for st, np_str in _READ_NATIVE.items()}

_ENCODINGS = ("native", "raw", "pickle")


@dataclass(frozen=True)
class ArrayEntry:
    """Where one array of a checkpoint object lies, and how its bytes are to be viewed."""

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
class ValidatedHeader:
    """What a valid header says; shared by every read of the same header bytes, so never changed."""

    manifest_json: str
    skeleton: Skeleton  # the manifest's tree, read by `unflatten` only
    extra_json: str
    entries: Mapping[str, ArrayEntry]  # tree order
    leaves: Mapping[str, str]  # what `select=` may name -> the array path holding it (`tree.leaf_arrays`)
    data_size: int  # bytes of array data the header describes
    pickled: tuple[str, ...]  # paths of the pickled arrays


@dataclass
class CheckpointLayout:
    """A checkpoint object's validated header and where its array bytes start."""

    header: ValidatedHeader
    data_start: int

    @property
    def entries(self) -> Mapping[str, ArrayEntry]:
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


def read_header_bytes(store: Readable, key: str) -> tuple[bytes, bytes]:
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


def read_layout(store: Readable, key: str) -> CheckpointLayout:
    """The validated layout of the object at `key`, reading only its header (two range reads)."""
    _, header = read_header_bytes(store, key)
    return parse_header(header, len(header), None, store, key)


def parse_object(buf: memoryview, store: Readable, key: str) -> CheckpointLayout:
    """Validate a whole object held in memory (or mapped) and return its layout."""
    size = len(buf)
    if size < 8:
        raise CorruptData(f"truncated checkpoint: {size} bytes, less than the 8-byte header length", url=store.url, key=key)
    n = _header_length(bytes(buf[:8]), size, store, key)
    return parse_header(bytes(buf[8 : 8 + n]), n, size - 8 - n, store, key)


def _header_length(head: bytes, size: int | None, store: Readable, key: str) -> int:
    """The header length the first 8 bytes give; `CorruptData` unless it is sane (and fits `size`)."""
    n = int.from_bytes(head[:8], "little")
    if n > MAX_HEADER_SIZE:
        raise CorruptData(f"header length {n} is more than the {MAX_HEADER_SIZE} bytes safetensors allows", url=store.url, key=key)
    if size is not None and 8 + n > size:
        raise CorruptData(f"truncated checkpoint: the header length says {n} bytes, the object has {size}", url=store.url, key=key)
    if n < 2:
        raise CorruptData(f"header length {n} is too small for a JSON header", url=store.url, key=key)
    return n


def parse_header(header: bytes, n: int, data_size: int | None, store: Readable, key: str) -> CheckpointLayout:
    """Check everything a header and its manifest claim, before any array is touched.

    The checks are a pure function of the header bytes, so their result is memoized by those bytes
    (`_validated_header`): loading leaves of one checkpoint again and again skips them. Each call
    still gets a manifest of its own, parsed afresh, that it may change.
    """
    validate = _validated_header if len(header) <= _MEMO_MAX_HEADER else _validated_header.__wrapped__
    try:
        return CheckpointLayout(validate(header, data_size), data_start=8 + n)
    except _InvalidHeader as exc:
        raise CorruptData(str(exc), url=store.url, key=key) from None


class _InvalidHeader(ValueError):
    """What `_validated_header` found wrong; `parse_header` turns it into `CorruptData` naming the object."""


# Larger headers are validated on every read rather than kept: a parsed skeleton takes several
# times its JSON size, so the memo holds at most a few tens of MiB.
_MEMO_MAX_HEADER = 1 << 20


@functools.lru_cache(maxsize=8)
def _validated_header(header: bytes, data_size: int | None) -> ValidatedHeader:
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
    entries: dict[str, ArrayEntry] = {}
    seen_tensors: set[str] = set()
    try:
        nodes = array_kinds(manifest["tree"])
        leaves = leaf_arrays(manifest["tree"])
        carried = {path: stored_dtype(node) for path, node in nodes.items()}
    except ValueError as exc:
        raise bad(str(exc)) from None
    for path, node in nodes.items():
        kind = node["t"]
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
            dtype = dtype_from_description(info.get("dtype"))
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
            if _READ_NATIVE[t["dtype"]] != dtype.str or t["shape"] != shape or (carried[path] or t["dtype"]) != t["dtype"]:
                leaf = f" (a {kind} leaf stored as {carried[path]})" if carried[path] else ""
                raise bad(f"array {path!r}: tensor {t['dtype']} {t['shape']} does not match {dtype} {shape}{leaf}")
        elif t["dtype"] != "U8" or t["shape"] != [nbytes] or (encoding == "pickle" and dtype != np.uint8):
            raise bad(f"array {path!r}: {encoding} tensor {t['dtype']} {t['shape']} does not match {dtype} {shape}")
        start = 8 + n
        entries[path] = ArrayEntry(path, tensor, encoding, dtype, tuple(shape), start + begin, start + end, crc)
    if set(by_tensor) != seen_tensors:
        raise bad(f"tensors {sorted(set(by_tensor) - seen_tensors)!r} are not in the tree")
    extra_json = json.dumps(manifest.get("extra", {}))
    pickled = tuple(p for p, e in entries.items() if e.encoding == "pickle")
    return ValidatedHeader(
        meta[METADATA_KEY],
        manifest["tree"],
        extra_json,
        types.MappingProxyType(entries),
        types.MappingProxyType(leaves),
        position,
        pickled,
    )


def _check_shape(shape: Any, what: str, bad: Any) -> None:
    """`bad(...)` unless `shape` is a list of at most MAX_NDIM sane dimensions."""
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(type(d) is int and 0 <= d < 2**63 for d in shape)
        or math.prod(shape) >= 2**63
    ):
        raise bad(f"{what}: shape {shape!r} is not a list of at most {MAX_NDIM} ints >= 0 of sane size")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads` object hook: refuse an object that names a key twice."""
    result = dict(pairs)
    if len(result) != len(pairs):
        names = [k for k, _ in pairs]
        raise ValueError(f"duplicate keys {sorted({k for k in names if names.count(k) > 1})!r}")
    return result


def array_kinds(skeleton: Any) -> dict[str, Skeleton]:
    """{array path: the node it holds} of a (possibly hostile) skeleton, in tree order (a storage that
    tensors share: its first tensor's node); `ValueError` when its shape or a node type is not one the
    codec writes, or an array path repeats."""
    kinds: dict[str, Skeleton] = {}
    shared: set[str] = set()
    for node, _ in walk_skeleton(skeleton):
        t = node["t"]
        if t not in NODE_TYPES and t != "pickle":
            raise ValueError(f"unknown node type {t!r} in the tree skeleton")
        if t not in ("array", "pickle", "ml_array", "tensor"):
            continue
        path = node.get("path")
        storage = node.get("storage") if t == "tensor" else None
        if storage is not None and isinstance(storage, str) and storage in shared:
            continue
        held = path if storage is None else storage
        if not isinstance(held, str) or held in kinds:
            raise ValueError(f"the tree skeleton names array {held!r} twice or not as a string")
        kinds[held] = node
        if storage is not None:
            shared.add(storage)
    return kinds
