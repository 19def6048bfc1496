"""Find runs under any URL: the demo's layout, a bare checkpoint directory, or one checkpoint.

The demo writes, under its root URL (``--url``, default ``./runs``)::

    <root>/<name>/checkpoints/<name>_iter_<n:06d>.ckpt, <name>_index.json
    <root>/<name>/logs/<name>.log, <name>_structured.jsonl (or its segments)
    <root>/<name>/results/<name>.json, .csv, .pkl, _summary.json

Any URL below or at such a root works: a run is the folder that holds `checkpoints/`, `logs/` or
`results/`, or a folder holding checkpoint indexes, log files or exports directly. Files are
found by listing the store, so runs written by user code with the same folder names show too.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from ..checkpointing import objects_of
from ..checkpointing.names import CKPT_RE, INDEX_RE, MANIFEST, is_checkpoint_part, split_checkpoint_url
from ..errors import StoreError
from ..experiment_logger.layout import SEGMENTS_SUFFIX, TEXT_SUFFIX
from ..store.base import Store
from .common import UsageError, join_url, open_url

__all__ = [
    "CHECKPOINTS",
    "DCP_COMMIT",
    "LOGS",
    "RESULTS",
    "CheckpointDir",
    "Run",
    "checkpoint_target",
    "discover",
    "list_keys",
    "stored_size",
]

DCP_COMMIT = "dcp_metadata.json"  # expstore.integrations.dcp.METADATA_KEY (importing that module imports torch)
CHECKPOINTS, LOGS, RESULTS = "checkpoints", "logs", "results"
_LOG_SUFFIXES = (TEXT_SUFFIX, ".jsonl")  # text logs, and JSON lines: structured logs and their segments


@dataclass
class CheckpointDir:
    """One experiment's checkpoint history: the directory URL, the experiment, the folder relative to the URL searched."""

    url: str
    experiment: str
    folder: str


@dataclass
class Run:
    """What one run left behind; file lists are keys relative to `url`."""

    name: str
    url: str
    checkpoints: list[CheckpointDir] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


def checkpoint_target(url: str) -> tuple[str, str, str] | None:
    """(directory URL, key, experiment) when `url` names one checkpoint (a sharded one by its
    manifest), else None."""
    last = url.rstrip("/").rpartition("/")[2]
    if not is_checkpoint_part(last) and not (last == MANIFEST and is_checkpoint_part(url.rstrip("/"))):
        return None
    base, key = split_checkpoint_url(url)
    return base, key, CKPT_RE.match(key)["exp"]  # type: ignore[index]


def stored_size(store: Store, key: str) -> int | None:
    """Bytes stored at `key`: a file, or every object of the checkpoint it names (all shards of a
    sharded one); None if unreadable."""
    try:
        return sum(store.size(k) for k in objects_of(store, key))
    except StoreError:
        return None


def list_keys(args: argparse.Namespace, url: str) -> list[str]:
    """Every key under `url` (an empty list when nothing is there)."""
    with open_url(args, url) as store:
        return store.list("")


def discover(args: argparse.Namespace, url: str, keys: list[str] | None = None) -> list[Run]:
    """The runs under `url`, sorted by their URL; `UsageError` when there is none."""
    if checkpoint_target(url):
        raise UsageError(f"{url!r} is one checkpoint, not a run or a folder of runs (try: expstore show {url})")
    runs: dict[str, Run] = {}
    keys = list_keys(args, url) if keys is None else keys
    for key in keys:
        if is_checkpoint_part(key):
            continue  # checkpoint objects: reached through their index
        folder, _, name = key.rpartition("/")
        folder = _above_segments(folder)
        parent, _, last = folder.rpartition("/")
        prefix = parent if last in (CHECKPOINTS, LOGS, RESULTS) else folder
        run = runs.get(prefix)
        if run is None:
            run_url = join_url(url, prefix)
            run = runs[prefix] = Run(_run_name(run_url), run_url)
        rel = key[len(prefix) + 1 :] if prefix else key
        m = INDEX_RE.match(name)
        if m:
            run.checkpoints.append(CheckpointDir(join_url(url, folder), m["exp"], folder))
        elif last == LOGS or name.endswith(_LOG_SUFFIXES):
            run.logs.append(rel)
        elif last == RESULTS:
            run.results.append(rel)
        else:
            run.other.append(rel)
    found = [r for r in runs.values() if r.checkpoints or r.logs or r.results]
    if not found:
        dcp = [k for k in keys if k.rpartition("/")[2] == DCP_COMMIT]
        if dcp:
            raise UsageError(
                f"{url!r} holds torch.distributed.checkpoint checkpoints ({', '.join(dcp[:3])}), which expstore's "
                "commands do not read: check one with `python -m expstore.integrations.dcp verify URL`"
            )
        raise UsageError(f"no expstore run, checkpoint index, log or export found at {url!r}")
    return sorted(found, key=lambda r: r.url)


def _above_segments(folder: str) -> str:
    """The folder holding a logger's `<name>.segments/<session>/` tree, else `folder` itself."""
    parts = folder.split("/")
    for i, part in enumerate(parts):
        if part.endswith(SEGMENTS_SUFFIX):
            return "/".join(parts[:i])
    return folder


def _run_name(url: str) -> str:
    return url.rstrip("/").rpartition("/")[2] or url
