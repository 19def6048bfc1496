"""Checkpoints of a training run on any store: `CheckpointManager` and friends (DESIGN §4–5).

Layout in the checkpoint directory (any store URL, path or `Store`)::

    <exp>_iter_<iteration:06d>.ckpt   one checkpoint (one object on bytes stores; a tree of
                                      datasets on array-native stores: HDF5, Zarr)
    <exp>_index.json                  the index: the checkpoints that exist, sorted by iteration

Commit order of a save: write the checkpoint, then replace the index (compare-and-swap where the
store supports conditional writes, retried on conflict), then delete what retention dropped. The
index is the truth: readers only see the checkpoints it names, and `gc()` removes the others.

Decisions:

* `should_save_checkpoint(i)` is true for ``i > 0 and i % save_frequency == 0`` (iteration 0 is
  the untrained start and is not saved).
* A ref (what `save_checkpoint` returns and `list_checkpoints()` reports as ``path``) is the URL of
  one checkpoint: ``store.url + "/" + key``. `load_checkpoint` also takes a bare key or an entry of
  `list_checkpoints()`.
* Retention keeps the `keep_last_n` highest iterations (all when None), every tagged checkpoint
  (any tag pins, e.g. ``"final"``, ``"at_threshold"``), the `keep_best_n` best by
  ``metadata[metric]`` (entries without that metric are no candidates), the newest checkpoint,
  and the checkpoint this manager last loaded (the one a run resumed from).
* On array-native stores pickle cannot be used: ``allow_pickle=True`` there raises `TypeError`
  at construction.
* `resume_from_checkpoint(url)`: the URL of one checkpoint loads it; the URL of a checkpoint
  directory loads the latest valid checkpoint of its only experiment (pass ``experiment=`` when
  it holds several).
* `gc()` must not run while another process is saving to the same experiment: an object written
  but not yet in the index would be removed.
"""

from __future__ import annotations

import json
import random
import threading
import time
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..errors import CorruptData, KeyNotFound, PreconditionFailed, StoreError
from ..format.checkpoint import check_object, read_manifest, read_state, write_checkpoint
from ..format.strict_json import check_json_dict
from ..format.tree import check_structure
from ..store.base import Store
from ..store.keys import validate_experiment_name
from ..store.registry import open_store
from . import sharded as sharding
from .autosave import AutoCheckpoint
from .names import CKPT_RE as _CKPT_RE
from .names import check_iteration, positive_int_or_none
from .snapshot import SnapshotPool

__all__ = [
    "AutoCheckpoint",
    "CheckpointManager",
    "backup_checkpoint",
    "create_checkpoint_manager",
    "resume_from_checkpoint",
]

INDEX_FORMAT = "expstore.checkpoint-index"
INDEX_VERSION = 1
CAS_ATTEMPTS = 50
INDEX_READ_ATTEMPTS = 5  # reads of an index that does not parse, with backoff 0.05 s doubling (0.75 s in all)
_UNREADABLE = (CorruptData, KeyNotFound)
PRUNED_WHILE_READING_RESTARTS = 10  # loads restarted from a re-read index after another writer pruned the one being read


# ---- small helpers -------------------------------------------------------------------------------


def _check_metadata(metadata: Any) -> dict[str, Any]:
    """Metadata must be a dict of strict JSON; `TypeError` names the offending field."""
    if metadata is None:
        return {}
    check_json_dict(metadata, "metadata")
    return json.loads(json.dumps(metadata))  # a private, plain copy (tuples become lists)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _join(url: str, key: str) -> str:
    """The ref of `key` in the store at `url`."""
    return url + key if url.endswith("/") else f"{url}/{key}"


def split_ref(ref: str) -> tuple[str, str]:
    """Split the URL of one checkpoint into (store URL, key)."""
    base, _, key = ref.rstrip("/").rpartition("/")
    if key == sharding.MANIFEST:
        base, _, folder = base.rpartition("/")
        key = f"{folder}/{key}"
    if not base or not _CKPT_RE.match(key):
        raise ValueError(f"{ref!r} is not the URL of a checkpoint (…/<exp>_iter_<n>.ckpt or …/<exp>_iter_<n>/manifest.json)")
    if base.endswith(":/"):  # memory://key -> "memory:/" + "key"
        base += "/"
    return base, key


def _read_any(store: Store, key: str, select: list[str] | None, allow_pickle: bool) -> dict[str, Any]:
    """Read one checkpoint from `store` into the loaded-checkpoint dict (a sharded one as rank 0)."""
    if sharding.is_manifest_key(key):
        return sharding.load(store, key, rank=0, world_size=None, select=select, allow_pickle=allow_pickle)
    if isinstance(select, str):
        select = [select]
    if store.supports_arrays:
        tree = store.read_tree(key, select=None if select is None else [f"state/{p}" for p in select])
        if not isinstance(tree, dict) or "state" not in tree:
            raise CorruptData("not a checkpoint tree (no 'state')", url=store.url, key=key)
        info = tree
    else:
        state, info = read_state(store, key, select=select, allow_pickle=allow_pickle)
        info["state"] = state
    return {
        "iteration": info.get("iteration"),
        "timestamp": info.get("timestamp"),
        "state": info["state"],
        "metadata": info.get("metadata") or {},
    }


def verify_object(store: Store, key: str) -> None:
    """Raise if the checkpoint at `key` (a sharded one: every shard) cannot be read whole or fails
    a checksum (never unpickles)."""
    if sharding.is_manifest_key(key):
        sharding.verify(store, key)
        return
    if store.supports_arrays:
        store.read_tree(key)
        return
    check_object(store.read(key), store, key)


# ---- the index -----------------------------------------------------------------------------------


def _parse_index(raw: bytes, store: Store, key: str, experiment: str) -> list[dict[str, Any]]:
    """The entries of an index object; `CorruptData` naming it when malformed."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
            raise ValueError(f"format is not {INDEX_FORMAT!r}")
        if doc.get("version") != INDEX_VERSION:
            raise ValueError(f"unknown index version {doc.get('version')!r}")
        entries = doc["checkpoints"]
        if not isinstance(entries, list):
            raise ValueError("'checkpoints' is not a list")
        for e in entries:
            if not isinstance(e, dict) or isinstance(e.get("iteration"), bool) or not isinstance(e.get("iteration"), int):
                raise ValueError(f"bad entry {e!r}")
            if not isinstance(e.get("key"), str) or not _CKPT_RE.match(e["key"]):
                raise ValueError(f"bad key in entry {e!r}")
            e.setdefault("tags", [])
            e.setdefault("metadata", {})
            e.setdefault("timestamp", None)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"corrupt checkpoint index of experiment {experiment!r}: {exc}", url=store.url, key=key) from None
    return sorted(entries, key=lambda e: e["iteration"])


def _encode_index(experiment: str, entries: list[dict[str, Any]]) -> bytes:
    doc = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "experiment": experiment,
        "checkpoints": sorted(entries, key=lambda e: e["iteration"]),
    }
    return json.dumps(doc, indent=1, allow_nan=False).encode()


def select_retained(
    entries: list[dict[str, Any]],
    keep_last_n: int | None,
    keep_best_n: int | None = None,
    metric: str | None = None,
    mode: str = "min",
    protect: frozenset[int] = frozenset(),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split index entries into (kept, dropped) by the retention rules of the module docstring."""
    if keep_last_n is None or not entries:
        return list(entries), []
    by_iter = sorted(entries, key=lambda e: e["iteration"])
    keep = {e["iteration"] for e in by_iter[-keep_last_n:]}
    keep.add(by_iter[-1]["iteration"])
    keep |= {e["iteration"] for e in by_iter if e.get("tags")}
    keep |= set(protect)
    if keep_best_n and metric:
        scored = [e for e in by_iter if _score(e, metric) is not None]
        scored.sort(key=lambda e: _score(e, metric), reverse=(mode == "max"))
        keep |= {e["iteration"] for e in scored[:keep_best_n]}
    kept = [e for e in by_iter if e["iteration"] in keep]
    dropped = [e for e in by_iter if e["iteration"] not in keep]
    return kept, dropped


def _score(entry: Mapping[str, Any], metric: str) -> float | None:
    value = (entry.get("metadata") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


# ---- the manager ---------------------------------------------------------------------------------


class CheckpointManager:
    """Save, list, load and prune the checkpoints of one experiment in one store."""

    def __init__(
        self,
        checkpoint_dir: Any,
        experiment_name: str,
        keep_last_n: int | None = 3,
        save_frequency: int = 100,
        *,
        keep_best_n: int | None = None,
        metric: str | None = None,
        mode: str = "min",
        allow_pickle: bool = False,
        async_save: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        single_writer: bool = False,
        **storage_options: Any,
    ):
        self.experiment_name = validate_experiment_name(experiment_name)
        self.keep_last_n = positive_int_or_none(keep_last_n, "keep_last_n")
        if positive_int_or_none(save_frequency, "save_frequency") is None:
            raise ValueError("save_frequency must be an int >= 1, got None")
        self.save_frequency = save_frequency
        self.keep_best_n = positive_int_or_none(keep_best_n, "keep_best_n")
        if self.keep_best_n is not None and not metric:
            raise ValueError("keep_best_n needs metric= (the metadata field to rank by)")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.metric, self.mode, self.allow_pickle = metric, mode, bool(allow_pickle)
        if not isinstance(single_writer, bool):
            raise TypeError(f"single_writer must be True or False, got {single_writer!r}")
        self.single_writer = single_writer
        self.store = open_store(checkpoint_dir, **storage_options)
        self._owns_store = not isinstance(checkpoint_dir, Store)
        self.storage_options = dict(storage_options)
        if self.allow_pickle and self.store.supports_arrays:
            raise TypeError(
                f"allow_pickle=True is not available on the array-native store {self.store.url!r}: "
                "it keeps checkpoints as real datasets; use a bytes store (local, S3, memory) for pickled leaves"
            )
        self.index_key = f"{self.experiment_name}_index.json"
        self.rank, self.world_size = sharding.check_ranks(rank, world_size, self.store)
        self._resumed_from: int | None = None
        self.async_save = bool(async_save)
        self._pending: threading.Thread | None = None
        self._pending_error: BaseException | None = None
        self._snapshots = SnapshotPool()
        self._load_order_memo: tuple[str, list[tuple[int, str]]] | None = None

    # -- names ------------------------------------------------------------------------------------

    def key_for(self, iteration: int) -> str:
        """The key of the checkpoint of `iteration` (its manifest when this manager saves shards)."""
        if self.world_size is not None:
            return sharding.manifest_key(self.experiment_name, iteration)
        return f"{self.experiment_name}_iter_{iteration:06d}.ckpt"

    def ref_for(self, key: str) -> str:
        """The ref (URL) of the checkpoint at `key` in this manager's store."""
        return _join(self.store.url, key)

    def should_save_checkpoint(self, iteration: int) -> bool:
        """True when `iteration` > 0 is a multiple of `save_frequency` (any integral number; `TypeError` else)."""
        iteration = check_iteration(iteration, "should_save_checkpoint(iteration)", minimum=None)
        return iteration > 0 and iteration % self.save_frequency == 0

    # -- index ------------------------------------------------------------------------------------

    def _read_index(self, with_version: bool = True) -> tuple[list[dict[str, Any]], str | None]:
        """(entries, version token or None when there is no index or it was not asked for).
        The version, which a compare-and-swap needs, is taken before the read."""
        version = None
        if with_version and self.store.supports_conditional_writes:
            try:
                version = self.store.version(self.index_key)
            except KeyNotFound:
                return [], None
        entries = self._fetch_index()
        return ([], None) if entries is None else (entries, version)

    def _fetch_index(self) -> list[dict[str, Any]] | None:
        """The parsed index (None when there is none). One that does not parse is read again with
        backoff before `CorruptData` is raised: where a PUT is not atomic (s3rver), a reader can
        catch an index half replaced by another writer."""
        attempt = 0
        while True:
            try:
                raw = self.store.read(self.index_key)
            except KeyNotFound:
                return None
            try:
                return _parse_index(raw, self.store, self.index_key, self.experiment_name)
            except CorruptData:
                attempt += 1
                if attempt == INDEX_READ_ATTEMPTS:
                    raise
                time.sleep(0.05 * 2 ** (attempt - 1))

    def _entries(self) -> list[dict[str, Any]]:
        self.wait_until_finished()
        return self._read_index(with_version=False)[0]

    def _load_order(self) -> list[tuple[int, str]]:
        """(iteration, key) of the indexed checkpoints, newest first. On a local disk the list is
        reused while the index keeps its version token (inode, ns mtime, size): one stat instead
        of reading and parsing the index before every load."""
        self.wait_until_finished()
        if self.store.local_path(self.index_key) is None:
            return [(e["iteration"], e["key"]) for e in reversed(self._entries())]
        try:
            version = self.store.version(self.index_key)
        except KeyNotFound:
            return []
        if self._load_order_memo is None or self._load_order_memo[0] != version:
            entries = self._fetch_index()
            if entries is None:
                return []
            self._load_order_memo = (version, [(e["iteration"], e["key"]) for e in reversed(entries)])
        return self._load_order_memo[1]

    def _commit(self, add: dict[str, Any] | None = None, prune: bool = True) -> list[dict[str, Any]]:
        """Add/replace entry `add` in the index (CAS, retried) and apply retention; return dropped entries."""
        self._check_index_writable()
        for attempt in range(CAS_ATTEMPTS):
            entries, version = self._read_index()
            if add is not None:
                entries = [e for e in entries if e["iteration"] != add["iteration"]] + [add]
            protect = frozenset([self._resumed_from]) if self._resumed_from is not None else frozenset()
            kept, dropped = (
                select_retained(entries, self.keep_last_n, self.keep_best_n, self.metric, self.mode, protect)
                if prune
                else (entries, [])
            )
            data = _encode_index(self.experiment_name, kept)
            if not self.store.supports_conditional_writes:  # single_writer=True: nobody else commits
                self.store.write(self.index_key, data)
                return dropped
            try:
                if version is None:
                    self.store.write(self.index_key, data, if_absent=True)
                else:
                    self.store.write(self.index_key, data, if_match=version)
                return dropped
            except PreconditionFailed:
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2 ** min(attempt, 7))))
        raise PreconditionFailed(
            f"could not update the checkpoint index after {CAS_ATTEMPTS} attempts (too many concurrent writers)",
            url=self.store.url,
            key=self.index_key,
        )

    def _check_index_writable(self) -> None:
        """Refuse to commit where a concurrent save could silently undo this one: a store without
        conditional writes, unless the caller promised `single_writer=True`."""
        if self.single_writer or self.store.supports_conditional_writes:
            return
        raise StoreError(
            f"{self.store.no_conditional_writes_reason}; without them two processes saving experiment "
            f"{self.experiment_name!r} at once can silently drop each other's index entries. Pass "
            "single_writer=True to CheckpointManager if only this process saves this experiment (the ranks "
            "of one sharded save count as one writer), or use a store that honours conditional writes",
            url=self.store.url,
            key=self.index_key,
        )

    def _delete_quietly(self, keys: list[str]) -> None:
        for key in [k for key in keys for k in sharding.objects_of(self.store, key)]:
            try:
                self.store.delete(key)
            except KeyNotFound:
                pass

    # -- save -------------------------------------------------------------------------------------

    def save_checkpoint(
        self,
        state: Any,
        iteration: int,
        metadata: dict[str, Any] | None = None,
        *,
        tag: str | None = None,
        blocking: bool | None = None,
    ) -> str:
        """Save `state` as the checkpoint of `iteration` (replacing one that exists); return its ref.

        `metadata` must be a JSON dict (`TypeError` names a bad field). `tag` (e.g. "final") pins the
        checkpoint against retention. A leaf that cannot be stored without pickle raises `TypeError`
        naming its path, and nothing is written.

        `blocking=False` (default: not `async_save`) copies the state and returns the ref at once
        (arrays into host buffers the manager keeps and reuses from save to save, the rest by
        `copy.deepcopy`); a background thread writes and commits. At most one save is in flight: the
        next save, load, list, verify, gc or close waits for it first, and an error it hit is raised
        then (never lost); `wait_until_finished()` waits explicitly. A blocking save returns once
        the checkpoint is committed; deleting what retention dropped runs behind the caller the
        same way.
        """
        self.wait_until_finished()
        iteration = check_iteration(iteration)
        if tag is not None and (not isinstance(tag, str) or not tag):
            raise TypeError(f"tag must be a non-empty str or None, got {tag!r}")
        meta = _check_metadata(metadata)
        if blocking is None:
            blocking = not self.async_save
        check_structure(state, "state")  # before the snapshot or the sharded walk recurses into it
        if not blocking:
            snapshot = self._snapshots.take(state)
            self._run_behind("expstore-checkpoint-save", self._save_and_delete, snapshot, iteration, meta, tag)
            return self.ref_for(self.key_for(iteration))
        ref, doomed = self._save_now(state, iteration, meta, tag)
        if doomed:  # retention's deletes run behind the caller; the next call waits for them
            self._run_behind("expstore-checkpoint-retention", self._delete_quietly, doomed)
        return ref

    def _save_and_delete(self, state: Any, iteration: int, meta: dict[str, Any], tag: str | None) -> None:
        self._delete_quietly(self._save_now(state, iteration, meta, tag)[1])

    def _run_behind(self, name: str, work: Any, *args: Any) -> None:
        """Run `work(*args)` in the pending thread, keeping an error for the caller's next call.

        The thread starts working once `start()` has returned to the caller: a new thread that ran
        at once would keep the GIL for up to the 5 ms switch interval while `start()` waits for it.
        (The wait is bounded, so a signal between `start()` and `set()` cannot leave it stuck.)
        """
        caller_back = threading.Event()

        def run() -> None:
            caller_back.wait(timeout=0.1)
            try:
                work(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's next call
                self._pending_error = exc

        self._pending = threading.Thread(target=run, name=name)
        self._pending.start()
        caller_back.set()

    def wait_until_finished(self) -> None:
        """Wait for the save (or retention's deletes) in flight, if any; re-raise the error it hit."""
        pending = self._pending
        if pending is not None:
            pending.join()
            self._pending = None
        error, self._pending_error = self._pending_error, None
        if error is not None:
            raise error

    def _save_now(
        self, state: Any, iteration: int, meta: dict[str, Any], tag: str | None, timestamp: str | None = None
    ) -> tuple[str, list[str]]:
        """Write and commit one checkpoint stamped `timestamp` (default: now; a copy keeps the
        original's); return its ref and the keys retention dropped (not yet deleted)."""
        self._check_index_writable()  # before anything is written
        key, timestamp = self.key_for(iteration), timestamp or _now()
        tags = [tag] if tag else []
        if self.world_size is not None:
            return sharding.save_shard(self, state, iteration, timestamp, meta, tags), []
        dropped: list[dict[str, Any]] = []
        for _ in range(CAS_ATTEMPTS):
            version = self._write_object(key, state, iteration, timestamp, meta, tags)
            entry = {"iteration": iteration, "key": key, "timestamp": timestamp, "tags": tags, "metadata": meta,
                     "version": version}
            dropped += self._commit(entry)
            if self._holds(key, version):
                return self.ref_for(key), [e["key"] for e in dropped]  # may include `key` when it falls below the window
        raise PreconditionFailed(
            f"another process kept replacing the checkpoint of iteration {iteration} while this one saved it "
            f"({CAS_ATTEMPTS} attempts)",
            url=self.store.url,
            key=key,
        )

    def _holds(self, key: str, version: str) -> bool:
        """False when the object at `key` is no longer the one this save wrote (version `version`):
        another process saving the same iteration replaced it, and the index entry just committed
        may describe this save while the object holds the other's. The save then runs again, so
        the entry the index keeps describes the object it names."""
        if not self.store.supports_conditional_writes:
            return True  # no version tokens to compare: last writer wins, unchecked
        try:
            return self.store.version(key) == version
        except KeyNotFound:
            return True  # retention (here or in the other process) removed it together with its entry

    def _write_object(
        self, key: str, state: Any, iteration: int, timestamp: str, meta: dict[str, Any], tags: list[str]
    ) -> str:
        """Write one checkpoint object (a tree on HDF5/Zarr); return its version token."""
        if self.store.supports_arrays:
            tree = {"iteration": iteration, "timestamp": timestamp, "metadata": meta, "tags": tags,
                    "experiment": self.experiment_name, "state": state}
            return self.store.write_tree(key, tree)
        extra = {"iteration": iteration, "timestamp": timestamp, "metadata": meta, "tags": tags,
                 "experiment": self.experiment_name}
        return write_checkpoint(self.store, key, state, extra=extra, allow_pickle=self.allow_pickle)

    # -- read -------------------------------------------------------------------------------------

    def list_checkpoints(self) -> list[dict[str, Any]]:
        """The checkpoints the index names, oldest (lowest iteration) first.

        Each is ``{"iteration", "path", "key", "timestamp", "tags", "metadata"}``; `path` is the ref.
        """
        return [
            {
                "iteration": e["iteration"],
                "path": self.ref_for(e["key"]),
                "key": e["key"],
                "timestamp": e.get("timestamp"),
                "tags": list(e.get("tags") or []),
                "metadata": e.get("metadata") or {},
            }
            for e in self._entries()
        ]

    def _resolve(self, path: Any) -> tuple[Store, str]:
        """(store, key) of a ref, key or `list_checkpoints()` entry."""
        if isinstance(path, Mapping):
            path = path.get("path") or path.get("key")
        if not isinstance(path, str):
            raise TypeError(f"path must be a ref, a key or an entry of list_checkpoints(), got {type(path).__name__}")
        own = _join(self.store.url, "")
        if path.startswith(own) and _CKPT_RE.match(path[len(own):]):
            return self.store, path[len(own):]
        if ("/" not in path and "\\" not in path) or _CKPT_RE.match(path):
            return self.store, path
        url, key = split_ref(path)
        return open_store(url, **self.storage_options), key

    def _read(self, store: Store, key: str, select: Any, rank: int | None, world_size: int | None) -> dict[str, Any]:
        """Read one checkpoint; a sharded one as rank `rank` of `world_size` (default: this manager's)."""
        if not sharding.is_manifest_key(key):
            return _read_any(store, key, select, self.allow_pickle)
        rank = (self.rank or 0) if rank is None else rank
        world_size = self.world_size if world_size is None else world_size
        return sharding.load(store, key, rank=rank, world_size=world_size, select=select, allow_pickle=self.allow_pickle)

    def load_checkpoint(
        self, path: Any = None, *, select: list[str] | None = None, rank: int | None = None, world_size: int | None = None
    ) -> dict[str, Any]:
        """Load a checkpoint: ``{"iteration", "timestamp", "state", "metadata"}``.

        `path=None` loads the highest iteration the index names, falling back to the next lower one
        (with a warning) when it is corrupt or missing; `FileNotFoundError` (`KeyNotFound`) when none
        is readable. `select=["model/w"]` reads only those arrays of the state. A sharded checkpoint
        loads as rank `rank` of `world_size` (default: this manager's, else rank 0 of the saved world
        size); another world size re-shards its `ShardedArray` leaves (docs/checkpointing.md).
        """
        self.wait_until_finished()
        if path is not None:
            store, key = self._resolve(path)
            try:
                loaded = self._read(store, key, select, rank, world_size)
            finally:
                if store is not self.store:
                    store.close()
            if store is self.store and isinstance(loaded.get("iteration"), int):
                self._resumed_from = loaded["iteration"]
            return loaded
        newest_first = self._load_order()
        candidates = list(newest_first)
        restarts = 0
        while candidates:
            iteration, key = candidates.pop(0)
            try:
                loaded = self._read(self.store, key, select, rank, world_size)
            except _UNREADABLE as exc:
                if isinstance(exc, KeyNotFound) and restarts < PRUNED_WHILE_READING_RESTARTS:
                    current = self._load_order()
                    if (iteration, key) not in current:  # another writer's retention removed it since: start again
                        restarts += 1
                        newest_first = candidates = list(current)
                        continue
                warnings.warn(f"skipping unreadable checkpoint {self.ref_for(key)}: {exc}", RuntimeWarning, stacklevel=2)
                continue
            self._resumed_from = iteration
            return loaded
        what = "no readable checkpoint" if newest_first else "no checkpoint"
        raise KeyNotFound(f"{what} of experiment {self.experiment_name!r}", url=self.store.url, key=self.index_key)

    # -- maintenance ------------------------------------------------------------------------------

    def verify(self) -> list[str]:
        """Read every indexed checkpoint whole and check its checksums; return the refs of bad ones."""
        bad = []
        for e in self._entries():
            try:
                verify_object(self.store, e["key"])
            except StoreError:
                bad.append(self.ref_for(e["key"]))
        return bad

    def gc(self, dry_run: bool = False) -> list[str]:
        """Delete `<exp>_iter_*.ckpt` objects and sharded-checkpoint folders the index does not name
        (left by crashes, or by ranks of a save that never completed), and the store's stale temp
        files (`Store.remove_stale_temp_files`: a local writer killed mid-write); return their keys.
        `dry_run=True` returns the same keys and deletes nothing.

        Do not run it while another process saves to this experiment.
        """
        named = {e["key"] for e in self._entries()}
        keys = self.store.list(f"{self.experiment_name}_iter_")
        orphans = sharding.orphans(keys, named, self.experiment_name)
        for key in keys:
            m = _CKPT_RE.match(key)
            if m and m["exp"] == self.experiment_name and key not in named and "/" not in key:
                orphans.append(key)
        if not dry_run:
            self._delete_quietly(sorted(orphans, key=sharding.is_manifest_key))  # a folder's manifest last
        return orphans + self.store.remove_stale_temp_files(dry_run=dry_run)

    def close(self) -> None:
        """Wait for a pending save (raising its error), free the async buffers, close the store if opened here."""
        try:
            self.wait_until_finished()
        finally:
            self._snapshots = SnapshotPool()
            if self._owns_store:
                self.store.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointManager({self.store.url!r}, {self.experiment_name!r}, keep_last_n={self.keep_last_n})"


def create_checkpoint_manager(
    experiment_name: str, checkpoint_dir: Any, keep_last_n: int | None = 3, save_frequency: int = 100, **kwargs: Any
) -> CheckpointManager:
    """The seed's factory: `CheckpointManager(checkpoint_dir, experiment_name, keep_last_n, save_frequency)`."""
    return CheckpointManager(checkpoint_dir, experiment_name, keep_last_n, save_frequency, **kwargs)


# ---- module functions ----------------------------------------------------------------------------


def _experiments_in(store: Store) -> list[str]:
    return [k[: -len("_index.json")] for k in store.list("") if k.endswith("_index.json") and "/" not in k]


def resume_from_checkpoint(
    url_or_ref: Any, *, experiment: str | None = None, allow_pickle: bool = False, **storage_options: Any
) -> dict[str, Any]:
    """Load a checkpoint to resume from.

    The URL of one checkpoint (a ref) loads that one. The URL of a checkpoint directory loads the
    latest valid checkpoint of its experiment (``experiment=`` picks one when several share the
    directory; `ValueError` if ambiguous); `FileNotFoundError` when there is none.
    """
    if isinstance(url_or_ref, str):
        last = url_or_ref.rstrip("/").rpartition("/")[2]
        if _CKPT_RE.match(last) or last == sharding.MANIFEST:
            url, key = split_ref(url_or_ref)
            with open_store(url, **storage_options) as store:
                return _read_any(store, key, None, allow_pickle)
    store = open_store(url_or_ref, **storage_options)
    try:
        if experiment is None:
            found = _experiments_in(store)
            if not found:
                raise KeyNotFound("no checkpoint index in this directory", url=store.url)
            if len(found) > 1:
                raise ValueError(f"{store.url!r} holds the experiments {found!r}; pass experiment=")
            experiment = found[0]
        return CheckpointManager(store, experiment, keep_last_n=None, allow_pickle=allow_pickle).load_checkpoint()
    finally:
        if not isinstance(url_or_ref, Store):
            store.close()


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
    src_url, key = split_ref(ref)
    experiment = _CKPT_RE.match(key)["exp"]  # type: ignore[index]
    with open_store(src_url, **dict(source_options or {})) as src, CheckpointManager(
        backup_url, experiment, keep_last_n=None, allow_pickle=allow_pickle, **storage_options
    ) as dest:
        return _copy_checkpoint(src, key, dest, allow_pickle)


def _copy_checkpoint(src: Store, key: str, dest: CheckpointManager, allow_pickle: bool) -> str:
    if sharding.is_manifest_key(key):
        return _copy_sharded(src, key, dest, allow_pickle)
    if not src.supports_arrays and not dest.store.supports_arrays:
        data = src.read(key)
        extra = check_object(data, src, key).extra()  # never copy garbage: header and every crc32c
        dest.store.write(key, data)
        return _index_copy(dest, key, extra)
    loaded = _read_any(src, key, None, allow_pickle)
    tags = _tags_of(src, key)
    return _save_copy(dest, loaded, tags)


def _copy_sharded(src: Store, key: str, dest: CheckpointManager, allow_pickle: bool) -> str:
    """A sharded checkpoint: its shards and manifest to a bytes store, else its assembled state."""
    if dest.store.supports_arrays:  # HDF5 / Zarr hold no sharded checkpoints: save the whole state as one
        loaded = sharding.assemble(src, key, allow_pickle)
        return _save_copy(dest, loaded, loaded["tags"])
    return _index_copy(dest, key, sharding.copy(src, key, dest.store))


def _save_copy(dest: CheckpointManager, loaded: Mapping[str, Any], tags: list[str]) -> str:
    """Save a loaded checkpoint into `dest` as it was: its iteration, metadata, first tag and timestamp."""
    dest.wait_until_finished()
    iteration = check_iteration(loaded["iteration"])
    meta = _check_metadata(loaded["metadata"])
    ref, _ = dest._save_now(loaded["state"], iteration, meta, tags[0] if tags else None, timestamp=loaded.get("timestamp"))
    return ref


def _index_copy(dest: CheckpointManager, key: str, extra: dict[str, Any]) -> str:
    """Name the copied checkpoint at `key` in `dest`'s index (never pruned by this), from its `extra`."""
    entry = {
        "iteration": extra.get("iteration", int(_CKPT_RE.match(key)["it"])),  # type: ignore[index]
        "key": key,
        "timestamp": extra.get("timestamp"),
        "tags": list(extra.get("tags") or []),
        "metadata": extra.get("metadata") or {},
    }
    if sharding.is_manifest_key(key):
        entry["world_size"] = extra.get("world_size")
    dest._commit(entry, prune=False)
    return dest.ref_for(key)


def _tags_of(store: Store, key: str) -> list[str]:
    """Tags recorded in the checkpoint itself (bytes stores: manifest; array stores: the tree)."""
    try:
        if store.supports_arrays:
            return list(store.read_tree(key).get("tags") or [])
        return list((read_manifest(store, key).get("extra") or {}).get("tags") or [])
    except (StoreError, AttributeError):
        return []
