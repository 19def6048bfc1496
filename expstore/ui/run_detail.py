"""One run read from its store: its summary (live, not waiting for the catalog), config and checkpoints."""

from __future__ import annotations

import time
from typing import Any

from ..catalog import RunRecord
from ..catalog.records import record_from_summaries
from ..checkpointing import CheckpointManager, verify_object
from ..errors import KeyNotFound, StoreError
from ..format.run_summary import LOGS_FOLDER, SUMMARY_SUFFIX, is_stale, log_key, parse_summary, run_folder, split_stem
from ..store.base import Store
from .run_logs import folder_store

__all__ = ["checkpoint_folder", "list_checkpoints", "read_run", "verify_checkpoint"]

CHECKPOINTS_FOLDER = "checkpoints"  # the demo layout's <run>/checkpoints beside <run>/logs


def read_run(store: Store, folder: str, name: str) -> RunRecord | None:
    """The run of experiment `name` in logs folder `folder`, from its summaries (every rank); None when it has none."""
    prefix = f"{folder}/{name}" if folder else name
    docs: list[tuple[int, dict[str, Any]]] = []
    for key in store.list(prefix):
        parsed = log_key(key)
        if not (parsed and parsed[2] and parsed[0] == folder and key.endswith(SUMMARY_SUFFIX)):
            continue
        stem_name, rank = split_stem(parsed[1])
        if stem_name != name:
            continue
        try:
            doc = parse_summary(store.read(key))
        except KeyNotFound:
            continue
        if doc is not None:
            docs.append((-1 if rank is None else rank, doc))
    if not docs:
        return None
    record = record_from_summaries(store.url, folder, name, [doc for _, doc in sorted(docs, key=lambda d: d[0])])
    if is_stale(record.status, record.heartbeat_time, record.heartbeat_seconds, time.time()):
        record.status = "stale"
    return record


def checkpoint_folder(store: Store, folder: str, name: str) -> str | None:
    """Where the run's checkpoints are: ``<run>/checkpoints`` beside ``<run>/logs``, else the logs folder
    itself; None when neither holds a checkpoint index of experiment `name`."""
    candidates = [f"{run_folder(folder)}/{CHECKPOINTS_FOLDER}".lstrip("/")] if folder.rpartition("/")[2] == LOGS_FOLDER else []
    for candidate in [*candidates, folder]:
        if _manager(store, candidate, name).list_checkpoints():
            return candidate
    return None


def _manager(store: Store, folder: str, name: str) -> CheckpointManager:
    return CheckpointManager(folder_store(store, folder), name)


def _size(store: Store, key: str) -> int | None:
    try:
        return store.size(key)
    except StoreError:
        return None  # a sharded checkpoint is a folder of objects, not one


def list_checkpoints(store: Store, folder: str | None, name: str) -> list[dict[str, Any]]:
    """The run's indexed checkpoints, oldest first: iteration, key, size, timestamp, tags, metadata."""
    if folder is None:
        return []
    sub = folder_store(store, folder)
    return [
        {"iteration": e["iteration"], "key": e["key"], "size": _size(sub, e["key"]), "timestamp": e["timestamp"],
         "tags": e["tags"], "metadata": e["metadata"]}
        for e in _manager(store, folder, name).list_checkpoints()
    ]


def verify_checkpoint(store: Store, folder: str | None, name: str, iteration: int) -> dict[str, Any] | None:
    """``{"iteration", "ok", "problem"}`` after reading checkpoint `iteration` whole; None when the index has no such one."""
    entry = next((e for e in list_checkpoints(store, folder, name) if e["iteration"] == iteration), None)
    if entry is None or folder is None:
        return None
    try:
        verify_object(folder_store(store, folder), entry["key"])
    except StoreError as exc:
        return {"iteration": iteration, "ok": False, "problem": str(exc)}
    return {"iteration": iteration, "ok": True, "problem": None}
