"""`CheckpointManager`: save, list, load and prune the rolling checkpoints of one experiment.

Layout in the checkpoint directory (any store URL, path or `Store`)::

    <exp>_iter_<iteration:06d>.ckpt   one checkpoint (one object on bytes stores; a tree of
                                      datasets on array-native stores: HDF5, Zarr)
    <exp>_iter_<iteration:06d>/       a sharded checkpoint: one shard per rank and a manifest
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
* Retention (`retention.py`) protects the checkpoint this manager last loaded (the one a run
  resumed from).
* On array-native stores pickle cannot be used: ``allow_pickle=True`` there raises `TypeError`
  at construction.
* `resume_from_checkpoint(url)`: the URL of one checkpoint loads it; the URL of a checkpoint
  directory loads the latest valid checkpoint of its only experiment (pass ``experiment=`` when
  it holds several).
* `gc()` must not run while another process is saving to the same experiment: an object written
  but not yet in the index would be removed.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import CorruptData, KeyNotFound, PreconditionFailed, StoreError
from ..format.checkpoint import write_checkpoint
from ..format.tree import check_storable, check_structure
from ..store.base import Store
from ..store.keys import validate_experiment_name
from ..store.locate import join_url, opened_store
from . import sharded
from .index import CAS_ATTEMPTS, Index
from .names import (
    CKPT_RE,
    check_iteration,
    checkpoint_key,
    is_manifest_key,
    manifest_key,
    orphan_keys,
    positive_int_or_none,
    split_checkpoint_url,
    strict_json_metadata,
)
from .reading import load_object, objects_of, verify_object
from .retention import select_retained
from .snapshot import SnapshotPool

__all__ = ["CheckpointManager", "create_checkpoint_manager"]

PRUNED_WHILE_READING_RESTARTS = 10  # loads restarted from a re-read index after another writer pruned the one being read


def _now() -> str:
    return datetime.now(UTC).isoformat()


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
        self._closing = contextlib.ExitStack()  # closes the store only if this manager opened it
        self.store = self._closing.enter_context(opened_store(checkpoint_dir, **storage_options))
        self.storage_options = dict(storage_options)
        if self.allow_pickle and self.store.supports_arrays:
            raise TypeError(
                f"allow_pickle=True is not available on the array-native store {self.store.url!r}: "
                "it keeps checkpoints as real datasets; use a bytes store (local, S3, memory) for pickled leaves"
            )
        self.index = Index(self.store, self.experiment_name, single_writer=single_writer)
        self.index_key = self.index.key
        self.rank, self.world_size = sharded.check_ranks(rank, world_size, self.store)
        self._resumed_from: int | None = None
        self.async_save = bool(async_save)
        self._pending: threading.Thread | None = None
        self._pending_error: BaseException | None = None
        self._snapshots = SnapshotPool()

    # -- names ------------------------------------------------------------------------------------

    def key_for(self, iteration: int) -> str:
        """The key of the checkpoint of `iteration` (its manifest when this manager saves shards)."""
        if self.world_size is not None:
            return manifest_key(self.experiment_name, iteration)
        return checkpoint_key(self.experiment_name, iteration)

    def ref_for(self, key: str) -> str:
        """The ref (URL) of the checkpoint at `key` in this manager's store."""
        return join_url(self.store.url, key)

    def should_save_checkpoint(self, iteration: int) -> bool:
        """True when `iteration` > 0 is a multiple of `save_frequency` (any integral number; `TypeError` else)."""
        iteration = check_iteration(iteration, "should_save_checkpoint(iteration)", minimum=None)
        return iteration > 0 and iteration % self.save_frequency == 0

    # -- index ------------------------------------------------------------------------------------

    def _entries(self) -> list[dict[str, Any]]:
        self.wait_until_finished()
        return self.index.entries()

    def _retain(self, entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(kept, dropped) by this manager's retention, the checkpoint it last loaded protected."""
        protect = frozenset([self._resumed_from]) if self._resumed_from is not None else frozenset()
        return select_retained(entries, self.keep_last_n, self.keep_best_n, self.metric, self.mode, protect)

    def _delete_quietly(self, keys: list[str]) -> None:
        """Delete every object of the checkpoints at `keys`; those already gone are no error."""
        for obj in [obj for key in keys for obj in objects_of(self.store, key)]:
            try:
                self.store.delete(obj)
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
        meta = strict_json_metadata(metadata)
        if blocking is None:
            blocking = not self.async_save
        check_structure(state, "state")  # before the snapshot or the sharded walk recurses into it
        if not blocking:
            if self.world_size is None and not self.allow_pickle:
                check_storable(state, "state")  # refused now, not at the next call
            snapshot = self._snapshots.take(state)
            self._run_behind("expstore-checkpoint-save", self._save_and_delete, snapshot, iteration, meta, tag)
            return self.ref_for(self.key_for(iteration))
        ref, doomed = self.write_and_commit(state, iteration, meta, tag)
        if doomed:  # retention's deletes run behind the caller; the next call waits for them
            self._run_behind("expstore-checkpoint-retention", self._delete_quietly, doomed)
        return ref

    def _save_and_delete(self, state: Any, iteration: int, meta: dict[str, Any], tag: str | None) -> None:
        self._delete_quietly(self.write_and_commit(state, iteration, meta, tag)[1])

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

    def write_and_commit(
        self, state: Any, iteration: int, meta: dict[str, Any], tag: str | None, timestamp: str | None = None
    ) -> tuple[str, list[str]]:
        """Write and commit one checkpoint stamped `timestamp` (default: now; a copy keeps the
        original's) now, with arguments already checked; return its ref and the keys retention
        dropped (not yet deleted). `save_checkpoint` and copies save through it."""
        self.index.check_writable()  # before anything is written
        key, timestamp = self.key_for(iteration), timestamp or _now()
        tags = [tag] if tag else []
        if self.world_size is not None:
            entry = {"iteration": iteration, "key": key, "timestamp": timestamp, "tags": tags, "metadata": meta,
                     "world_size": self.world_size}
            assert self.rank is not None
            if sharded.save_shard(self.store, state, entry, self.rank, self.experiment_name, self.allow_pickle):
                self._delete_quietly([e["key"] for e in self.index.commit(entry, self._retain)])
            return self.ref_for(key), []
        dropped: list[dict[str, Any]] = []
        for _ in range(CAS_ATTEMPTS):
            version = self._write_object(key, state, iteration, timestamp, meta, tags)
            entry = {"iteration": iteration, "key": key, "timestamp": timestamp, "tags": tags, "metadata": meta,
                     "version": version}
            dropped += self.index.commit(entry, self._retain)
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

    def _resolve(self, path: Any) -> tuple[Store | str, str]:
        """(this manager's store or the URL of another, key) of a ref, key or `list_checkpoints()` entry."""
        if isinstance(path, Mapping):
            path = path.get("path") or path.get("key")
        if not isinstance(path, str):
            raise TypeError(f"path must be a ref, a key or an entry of list_checkpoints(), got {type(path).__name__}")
        own = join_url(self.store.url, "")
        if path.startswith(own) and CKPT_RE.match(path[len(own):]):
            return self.store, path[len(own):]
        if ("/" not in path and "\\" not in path) or CKPT_RE.match(path):
            return self.store, path
        return split_checkpoint_url(path)

    def _read(
        self, store: Store, key: str, select: Any, rank: int | None, world_size: int | None, map_location: Any
    ) -> dict[str, Any]:
        """Read one checkpoint; a sharded one as rank `rank` of `world_size` (default: this manager's)."""
        rank = (self.rank or 0) if rank is None else rank
        world_size = self.world_size if world_size is None else world_size
        return load_object(
            store, key, select=select, allow_pickle=self.allow_pickle, rank=rank, world_size=world_size,
            map_location=map_location,
        )

    def load_checkpoint(
        self,
        path: Any = None,
        *,
        select: list[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        map_location: Any = None,
    ) -> dict[str, Any]:
        """Load a checkpoint: ``{"iteration", "timestamp", "state", "metadata"}``.

        `path=None` loads the highest iteration the index names, falling back to the next lower one
        (with a warning) when it is corrupt or missing; `FileNotFoundError` (`KeyNotFound`) when none
        is readable. `select=["model/w"]` reads only those arrays of the state. A sharded checkpoint
        loads as rank `rank` of `world_size` (default: this manager's, else rank 0 of the saved world
        size); another world size re-shards its `ShardedArray` leaves (docs/checkpointing.md).
        Torch tensors come back on the device they were saved on, or where `map_location` says, as
        `torch.load` takes it (`"cpu"`, a `torch.device`, a dict, a callable); see docs/pytorch.md.
        """
        self.wait_until_finished()
        if path is not None:
            where, key = self._resolve(path)
            with opened_store(where, **({} if where is self.store else self.storage_options)) as store:
                loaded = self._read(store, key, select, rank, world_size, map_location)
            if store is self.store and isinstance(loaded.get("iteration"), int):
                self._resumed_from = loaded["iteration"]
            return loaded
        newest_first = self.index.load_order()
        candidates = list(newest_first)
        restarts = 0
        while candidates:
            iteration, key = candidates.pop(0)
            try:
                loaded = self._read(self.store, key, select, rank, world_size, map_location)
            except (CorruptData, KeyNotFound) as exc:
                if isinstance(exc, KeyNotFound) and restarts < PRUNED_WHILE_READING_RESTARTS:
                    current = self.index.load_order()
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
        orphans = orphan_keys(self.store.list(f"{self.experiment_name}_iter_"), named, self.experiment_name)
        if not dry_run:
            self._delete_quietly(sorted(orphans, key=is_manifest_key))  # a folder's manifest last
        return orphans + self.store.remove_stale_temp_files(dry_run=dry_run)

    def close(self) -> None:
        """Wait for a pending save (raising its error), free the async buffers, close the store if opened here."""
        try:
            self.wait_until_finished()
        finally:
            self._snapshots = SnapshotPool()
            self._closing.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointManager({self.store.url!r}, {self.experiment_name!r}, keep_last_n={self.keep_last_n})"


def create_checkpoint_manager(
    experiment_name: str, checkpoint_dir: Any, keep_last_n: int | None = 3, save_frequency: int = 100, **kwargs: Any
) -> CheckpointManager:
    """`CheckpointManager(checkpoint_dir, experiment_name, keep_last_n, save_frequency)`, the experiment name first."""
    return CheckpointManager(checkpoint_dir, experiment_name, keep_last_n, save_frequency, **kwargs)
