"""The run summary document (``<stem>_run.json``): its format tag, the key suffixes of a logger's
files, how a key names a run, the stale rule, and the flattening of a config into params.

Loggers write summaries (`expstore.experiment_logger`); the run listing and the catalog read them.
This module is pure: it knows names and documents, never a store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

FORMAT = "expstore-run-summary/1"
RUNNING = "running"
STALE = "stale"  # running, says the summary, but its heartbeat stopped
STALE_AFTER_BEATS = 5  # missed beats (by the writer's own interval) before a running run is stale
STRUCTURED_SUFFIX = "_structured.jsonl"
TEXT_SUFFIX = ".log"
SEGMENTS_SUFFIX = ".segments"
SUMMARY_SUFFIX = "_run.json"
LOGS_FOLDER = "logs"  # the demo layout's <run>/logs: the run is the folder above it
_RANKED = re.compile(r"^(?P<name>.+)\.rank(?P<rank>0|[1-9]\d*)$")

__all__ = [
    "FORMAT",
    "LOGS_FOLDER",
    "RUNNING",
    "SEGMENTS_SUFFIX",
    "STALE",
    "STALE_AFTER_BEATS",
    "STRUCTURED_SUFFIX",
    "SUMMARY_SUFFIX",
    "TEXT_SUFFIX",
    "environment_tags",
    "flatten_params",
    "instant",
    "is_stale",
    "iso_seconds",
    "iso_time",
    "log_key",
    "overall_status",
    "parse_summary",
    "run_folder",
    "split_stem",
    "summary_status",
]


def split_stem(stem: str) -> tuple[str, int | None]:
    """(experiment name, rank or None) of a stem: ``exp.rank3`` -> ``("exp", 3)``."""
    m = _RANKED.match(stem)
    return (m["name"], int(m["rank"])) if m else (stem, None)


def log_key(key: str) -> tuple[str, str, bool] | None:
    """(folder, stem, is a summary) of a summary, structured log or segment key; None for other keys."""
    parts = key.split("/")
    for i, part in enumerate(parts[:-1]):
        if part.endswith(SEGMENTS_SUFFIX) and len(part) > len(SEGMENTS_SUFFIX):
            return "/".join(parts[:i]), part[: -len(SEGMENTS_SUFFIX)], False
    folder, last = "/".join(parts[:-1]), parts[-1]
    for suffix, is_summary in ((SUMMARY_SUFFIX, True), (STRUCTURED_SUFFIX, False)):
        if last.endswith(suffix) and len(last) > len(suffix):
            return folder, last[: -len(suffix)], is_summary
    return None


def run_folder(folder: str) -> str:
    """The run a logs folder belongs to: the folder above ``<run>/logs``, else the folder itself."""
    parent, _, last = folder.rpartition("/")
    return parent if last == LOGS_FOLDER else folder


def iso_time(seconds: float) -> str:
    """A unix time as local ISO time with its UTC offset, as the logs and summaries write times."""
    return datetime.fromtimestamp(seconds).astimezone().isoformat()


def iso_seconds(stamp: Any) -> float | None:
    """An ISO timestamp as an instant, so that ranks in different time zones compare right; None when unreadable."""
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


def instant(stamp: Any) -> float:
    """`iso_seconds` as a sort key: an unreadable timestamp counts as 0 (before any run)."""
    seconds = iso_seconds(stamp)
    return 0.0 if seconds is None else seconds


def is_stale(status: Any, heartbeat: float | None, every: Any, now: float) -> bool:
    """The stale rule: a running run whose last heartbeat is more than `STALE_AFTER_BEATS` beats old at `now`."""
    return (status == RUNNING and bool(heartbeat) and isinstance(every, (int, float))
            and now - heartbeat > STALE_AFTER_BEATS * every)  # type: ignore[operator]


def summary_status(doc: Mapping[str, Any], now: float) -> Any:
    """The status a summary says, or `STALE` for a running one whose heartbeat is `STALE_AFTER_BEATS` beats
    old at `now` (a summary without a heartbeat, from an older logger, stays as it says)."""
    status = doc.get("status")
    return STALE if is_stale(status, instant(doc.get("heartbeat_time")), doc.get("heartbeat_seconds"), now) else status


def overall_status(statuses: list[Any], running: Any = RUNNING) -> Any:
    """The status of a run of several ranks: `running` while any rank is, else the first that is not "completed"."""
    if any(s == running for s in statuses):
        return running
    return next((s for s in statuses if s != "completed"), "completed")


def parse_summary(data: bytes) -> dict[str, Any] | None:
    """The summary document in `data`, or None when it is not one (unreadable JSON, another format)."""
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as flat params: keys joined with ``.`` (``{"opt": {"lr": 1}}`` -> ``{"opt.lr": 1}``);
    values other than dicts are kept as they are (lists stay lists)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def environment_tags(environment: Any) -> dict[str, str]:
    """The tags a config event's environment gives a run: ``host``, ``git_commit`` and ``git_dirty`` where known."""
    if not isinstance(environment, dict):
        return {}
    tags = {"host": environment.get("hostname")}
    git = environment.get("git")
    if isinstance(git, dict):
        tags.update(git_commit=git.get("commit"), git_dirty=None if git.get("dirty") is None else str(bool(git["dirty"])).lower())
    return {k: str(v) for k, v in tags.items() if v is not None}
