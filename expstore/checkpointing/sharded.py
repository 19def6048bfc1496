"""Sharded checkpoints: each of N ranks writes its own shard; the last to land commits.

Layout of iteration `it` of experiment `exp` (any bytes store)::

    <exp>_iter_<it:06d>/shard-<r>-of-<n>.ckpt   rank r's state: one codec object (docs/checkpointing.md)
    <exp>_iter_<it:06d>/manifest.json           every shard with its size and header crc32c; written last

Commit: a rank writes its shard, then lists the folder. A rank that sees all n shards writes the
manifest with ``if_absent=True`` (of ranks racing there, exactly one wins) and adds it to the index
by compare-and-swap. A checkpoint exists for readers only once the index names its manifest, so a
rank that dies mid-save leaves no committed partial checkpoint, only orphan shards for `gc`. On a
store without conditional writes the manager saves only with ``single_writer=True``, and then
both are plain writes (ranks that complete the set at once write the same manifest).

The shard header's crc32c covers every array's crc32c, so the manifest pins the exact bytes of
every shard; a shard rewritten after the commit reads as `CorruptData`. `ShardedArray` leaves also
record crc32c per block of rows, so a loader with another world size reads only the row ranges it
needs (range GETs on S3) and still checks every byte it reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np

from ..errors import CorruptData, KeyNotFound, PreconditionFailed
from ..format.checkpoint import (
    CheckpointLayout,
    check_object,
    parse_header,
    pickle_leaf,
    read_header_bytes,
    read_ranges,
    rebuild_tree,
    refuse_pickle,
    write_flat,
)
from ..format.checksum import array_crc32c
from ..format.torch_tensors import MapLocation
from ..format.tree import flatten, selected_arrays
from ..store.base import Store
from .names import MANIFEST, checkpoint_folder, shard_name

__all__ = [
    "ShardedArray",
    "assemble",
    "check_ranks",
    "copy_shards",
    "first_shard_manifest",
    "load",
    "save_shard",
    "verify",
]

MANIFEST_FORMAT = "expstore.sharded-checkpoint"
MANIFEST_VERSION = 1
BLOCK_BYTES = 4 * 2**20  # rows of a ShardedArray are checksummed in blocks of about this size


@dataclass(frozen=True, eq=False)
class ShardedArray:
    """Rows ``[offset, offset + len(local))`` of an array of `global_shape` split along axis 0."""

    local: np.ndarray
    global_shape: tuple[int, ...]
    offset: int

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.global_shape)
        object.__setattr__(self, "global_shape", shape)
        if not isinstance(self.local, np.ndarray) or self.local.dtype.hasobject or self.local.ndim < 1:
            raise TypeError("ShardedArray.local must be a numpy array (not of dtype object) with ndim >= 1")
        rows = self.local.shape[0]
        if self.local.shape[1:] != shape[1:] or not 0 <= self.offset <= self.offset + rows <= (shape[0] if shape else -1):
            raise ValueError(
                f"ShardedArray: local shape {self.local.shape} at row {self.offset} does not fit global shape {shape}"
            )


# ---- ranks ---------------------------------------------------------------------------------------


def check_ranks(rank: int | None, world_size: int | None, store: Store) -> tuple[int | None, int | None]:
    """Validate a manager's `rank` / `world_size` (both or neither); sharding needs a bytes store."""
    if rank is None and world_size is None:
        return None, None
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1 when rank is given, got {world_size!r}")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
    if store.supports_arrays:
        raise TypeError(f"sharded checkpoints need a bytes store (local, S3, memory), not {store.url!r}")
    return rank, world_size


# ---- saving --------------------------------------------------------------------------------------


def save_shard(store: Store, state: Any, entry: dict[str, Any], rank: int, experiment: str, allow_pickle: bool) -> bool:
    """Write rank `rank`'s shard of the sharded checkpoint the index `entry` describes (its key,
    iteration, timestamp, metadata, tags, world size). True when this shard completed the set and
    this call published the manifest: the caller then commits `entry` to the index."""
    iteration, n, key = entry["iteration"], entry["world_size"], entry["key"]
    base = checkpoint_folder(experiment, iteration)
    skeleton, arrays, sharded = _flatten(state, allow_pickle)
    extra = {"iteration": iteration, "timestamp": entry["timestamp"], "metadata": entry["metadata"], "tags": entry["tags"],
             "experiment": experiment, "rank": rank, "world_size": n, "sharded": sharded}
    write_flat(store, f"{base}/{shard_name(rank, n)}", skeleton, arrays, extra, name="state", allow_pickle=allow_pickle)
    shards = _landed(store, base, n)
    return shards is not None and _publish(store, key, experiment, iteration, n, shards)


def _flatten(state: Any, allow_pickle: bool) -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
    """flatten() with `ShardedArray` leaves replaced by their local rows and described by array path."""
    found: dict[int, ShardedArray] = {}
    skeleton, arrays = flatten(_unwrap(state, found), "state", fallback=pickle_leaf if allow_pickle else None)
    sharded = {path: _describe(found[id(a)]) for path, a in arrays.items() if id(a) in found}
    return skeleton, arrays, sharded


def _unwrap(tree: Any, found: dict[int, ShardedArray]) -> Any:
    if isinstance(tree, ShardedArray):
        found[id(tree.local)] = tree
        return tree.local
    if type(tree) is dict:
        return {k: _unwrap(v, found) for k, v in tree.items()}
    if type(tree) in (list, tuple):
        return type(tree)(_unwrap(v, found) for v in tree)
    return tree


def _describe(sa: ShardedArray) -> dict[str, Any]:
    """Global shape, offset, rows and crc32c per block of rows of one sharded leaf."""
    local = np.ascontiguousarray(sa.local)
    row_bytes = local.dtype.itemsize * math.prod(local.shape[1:])
    block = max(1, BLOCK_BYTES // max(1, row_bytes))
    crcs = [array_crc32c(local[i : i + block]) for i in range(0, local.shape[0], block)]
    return {"global_shape": list(sa.global_shape), "offset": sa.offset, "rows": local.shape[0],
            "block_rows": block, "block_crc32c": crcs}


def _landed(store: Store, base: str, n: int) -> list[dict[str, Any]] | None:
    """The manifest records of all n shards if every one is present, else None."""
    present = set(store.list(f"{base}/shard-"))
    names = [shard_name(r, n) for r in range(n)]
    if any(f"{base}/{name}" not in present for name in names):
        return None
    records = []
    for rank, name in enumerate(names):
        key = f"{base}/{name}"
        layout, crc = _header(store, key)
        sharded = (layout.manifest.get("extra") or {}).get("sharded") or {}
        records.append({"rank": rank, "key": name, "size": store.size(key), "header_crc32c": crc,
                        "sharded": {p: [d["offset"], d["rows"]] for p, d in sharded.items()}})
    return records


def _publish(store: Store, key: str, experiment: str, iteration: int, n: int, shards: list[dict[str, Any]]) -> bool:
    """Write the manifest; True when this call wrote it (the caller then commits the index)."""
    doc = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "experiment": experiment,
           "iteration": iteration, "world_size": n, "shards": shards}
    data = json.dumps(doc, indent=1).encode()
    if not store.supports_conditional_writes:
        store.write(key, data)
        return True
    try:
        store.write(key, data, if_absent=True)
        return True
    except PreconditionFailed:
        pass
    try:  # another rank wrote it, or an earlier save of this iteration did: replace only the stale one
        version = store.version(key)
        try:
            same = _parse_manifest(store.read(key), store, key)["shards"] == shards
        except CorruptData:
            same = False
        if not same:
            store.write(key, data, if_match=version)
        return not same
    except (PreconditionFailed, KeyNotFound):
        return False


# ---- reading -------------------------------------------------------------------------------------


def _parse_manifest(raw: bytes, store: Store, key: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("version") != MANIFEST_VERSION:
            raise ValueError("not a sharded-checkpoint manifest of a known version")
        n, shards = doc["world_size"], doc["shards"]
        if not isinstance(n, int) or n < 1 or not isinstance(shards, list) or len(shards) != n:
            raise ValueError("world_size and shards do not agree")
        for rank, rec in enumerate(shards):
            if rec["key"] != shard_name(rank, n) or not isinstance(rec["size"], int) or not isinstance(rec["sharded"], dict):
                raise ValueError(f"bad shard record {rec!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"corrupt sharded-checkpoint manifest: {exc}", url=store.url, key=key) from None
    return doc


def _header(store: Store, key: str) -> tuple[CheckpointLayout, int]:
    """The layout of a shard and the crc32c of its length + header bytes (two range reads)."""
    head, header = read_header_bytes(store, key)
    return parse_header(header, len(header), None, store, key), google_crc32c.extend(google_crc32c.value(head), header)


def _checked_header(store: Store, base: str, record: dict[str, Any]) -> tuple[str, CheckpointLayout]:
    """(key, layout) of the shard `record` names; `CorruptData` unless it is the shard the manifest pinned."""
    key = f"{base}/{record['key']}"
    layout, crc = _header(store, key)
    if crc != record.get("header_crc32c") or layout.data_start + layout.data_size != record["size"]:
        raise CorruptData("the shard is not the one its manifest names (rewritten or damaged)", url=store.url, key=key)
    return key, layout


def load(
    store: Store,
    key: str,
    *,
    rank: int,
    world_size: int | None,
    select: list[str] | str | None,
    allow_pickle: bool,
    map_location: MapLocation = None,
) -> dict[str, Any]:
    """Load rank `rank`'s part of the sharded checkpoint at `key`, re-sharded when `world_size`
    differs from the saved one (`ShardedArray` leaves split evenly along axis 0; other leaves from shard 0)."""
    return _load(
        store, key, rank=rank, world_size=world_size, select=select, allow_pickle=allow_pickle, map_location=map_location
    )[0]


def _load(
    store: Store,
    key: str,
    *,
    rank: int,
    world_size: int | None,
    select: list[str] | str | None,
    allow_pickle: bool,
    map_location: MapLocation = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`load`, and the `extra` of the shard it read the header of."""
    doc = _parse_manifest(store.read(key), store, key)
    base, n = key[: -len(MANIFEST) - 1], doc["world_size"]
    m = n if world_size is None else world_size
    if not isinstance(m, int) or m < 1 or not isinstance(rank, int) or not 0 <= rank < m:
        raise ValueError(f"rank must be in [0, world_size={m}), got {rank!r}")
    if isinstance(select, str):
        select = [select]
    source = rank if m == n else 0
    skey, layout = _checked_header(store, base, doc["shards"][source])
    chosen = selected_arrays(layout.header.leaves, select)
    refuse_pickle([p for p in chosen if layout.entries[p].encoding == "pickle"], allow_pickle, store, skey)
    extra = layout.manifest.get("extra") or {}
    sharded = extra.get("sharded") or {}
    if m == n:
        arrays: dict[str, Any] = _read_whole(store, skey, layout, chosen)
        for p in chosen:
            if p in sharded:
                arrays[p] = ShardedArray(arrays[p], tuple(sharded[p]["global_shape"]), sharded[p]["offset"])
    else:
        arrays = _read_whole(store, skey, layout, [p for p in chosen if p not in sharded])
        headers = {source: (skey, layout)}
        for p in (p for p in chosen if p in sharded):
            arrays[p] = _gather(store, base, doc["shards"], headers, p, layout, rank, m)
    return {
        "iteration": extra.get("iteration"),
        "timestamp": extra.get("timestamp"),
        "state": rebuild_tree(layout, arrays, allow_pickle, store, skey, map_location),
        "metadata": extra.get("metadata") or {},
        "rank": rank,
        "world_size": m,
    }, extra


def _read_whole(store: Store, key: str, layout: CheckpointLayout, paths: list[str]) -> dict[str, np.ndarray]:
    """Read whole arrays by coalesced range reads, each checked against its crc32c."""
    return read_ranges(store, key, [layout.entries[p] for p in paths], copy=True)


def _gather(
    store: Store,
    base: str,
    records: list[dict[str, Any]],
    headers: dict[int, tuple[str, CheckpointLayout]],
    path: str,
    layout: CheckpointLayout,
    rank: int,
    m: int,
) -> ShardedArray:
    """Rank `rank` of `m`'s even share of the rows of sharded leaf `path`, read from the shards that hold them."""
    info = layout.manifest["extra"]["sharded"][path]
    shape = tuple(info["global_shape"])
    lo, hi = shape[0] * rank // m, shape[0] * (rank + 1) // m
    out = np.empty((hi - lo, *shape[1:]), dtype=layout.entries[path].dtype)
    filled = np.zeros(hi - lo, bool)
    for rec in records:
        offset, rows = rec["sharded"].get(path, (0, 0))
        a, b = max(lo, offset), min(hi, offset + rows)
        if a >= b:
            continue
        if rec["rank"] not in headers:
            headers[rec["rank"]] = _checked_header(store, base, rec)
        key, src = headers[rec["rank"]]
        out[a - lo : b - lo] = _read_rows(store, key, src, path, a - offset, b - offset)
        filled[a - lo : b - lo] = True
    if not filled.all():
        raise CorruptData(f"the shards do not cover rows [{lo}, {hi}) of {path!r}", url=store.url, key=f"{base}/{MANIFEST}")
    return ShardedArray(out, shape, lo)


def _read_rows(store: Store, key: str, layout: CheckpointLayout, path: str, a: int, b: int) -> np.ndarray:
    """Rows [a, b) of the shard's array `path`: one range read of the blocks holding them, each crc-checked."""
    e, info = layout.entries[path], layout.manifest["extra"]["sharded"][path]
    if e.encoding == "pickle" or info["rows"] != e.shape[0]:
        raise CorruptData(f"sharded array {path!r} does not match its description", url=store.url, key=key)
    row_bytes, block = e.dtype.itemsize * math.prod(e.shape[1:]), info["block_rows"]
    first, last = a // block * block, min(-(-b // block) * block, e.shape[0])
    blob = store.read_range(key, e.begin + first * row_bytes, e.begin + last * row_bytes)
    if len(blob) != (last - first) * row_bytes:
        raise CorruptData(f"truncated shard: rows [{first}, {last}) of {path!r}", url=store.url, key=key)
    rows = np.frombuffer(blob, e.dtype, count=(last - first) * math.prod(e.shape[1:])).reshape(last - first, *e.shape[1:])
    for start in range(first, last, block):
        if array_crc32c(rows[start - first : start - first + block]) != info["block_crc32c"][start // block]:
            raise CorruptData(f"checksum mismatch in rows from {start} of {path!r}", url=store.url, key=key)
    return rows[a - first : b - first]


def assemble(store: Store, key: str, allow_pickle: bool) -> dict[str, Any]:
    """The whole state of the sharded checkpoint at `key` as plain arrays (rank 0 of world size 1),
    with its tags, for a store that holds no sharded checkpoints."""
    loaded, extra = _load(store, key, rank=0, world_size=1, select=None, allow_pickle=allow_pickle)
    loaded["state"] = _unwrap(loaded["state"], {})
    loaded["tags"] = list(extra.get("tags") or [])
    return loaded


def copy_shards(src: Store, key: str, dest: Store) -> dict[str, Any]:
    """Copy the sharded checkpoint at `key` from `src` to `dest` byte for byte, every shard checked
    (the pinned one, every array's crc32c) before it is written, the manifest last; return shard
    0's `extra` (iteration, timestamp, metadata, tags). Nothing is decoded or unpickled."""
    raw = src.read(key)
    doc = _parse_manifest(raw, src, key)
    base, extra = key[: -len(MANIFEST) - 1], None
    for rec in doc["shards"]:
        skey = f"{base}/{rec['key']}"
        data = src.read(skey)
        layout = check_object(data, src, skey)
        if len(data) != rec["size"] or google_crc32c.value(data[: layout.data_start]) != rec["header_crc32c"]:
            raise CorruptData("the shard is not the one its manifest names (rewritten or damaged)", url=src.url, key=skey)
        dest.write(skey, data)
        extra = extra if extra is not None else layout.extra()
    dest.write(key, raw)
    return extra or {}


def first_shard_manifest(store: Store, key: str) -> dict[str, Any]:
    """The codec manifest of shard 0 of the sharded checkpoint at `key` (its header only, checked
    to be the shard the manifest pins): what `expstore show` describes."""
    doc = _parse_manifest(store.read(key), store, key)
    return _checked_header(store, key[: -len(MANIFEST) - 1], doc["shards"][0])[1].manifest


def verify(store: Store, key: str) -> None:
    """Raise unless every shard the manifest at `key` names is the pinned one and passes its checksums."""
    doc = _parse_manifest(store.read(key), store, key)
    for rec in doc["shards"]:
        skey, layout = _checked_header(store, key[: -len(MANIFEST) - 1], rec)
        _read_whole(store, skey, layout, list(layout.entries))
        rebuild_tree(layout, {}, False, store, skey)  # the skeleton decodes as a load decodes it (no array is built)
