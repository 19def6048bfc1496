"""The run catalog: one small summary object per logger, and the listing of runs built from them.

Every `ExperimentLogger` that writes files also writes ``<stem>_run.json`` next to its logs
(``<name>_run.json``, or ``<name>.rank<r>_run.json`` per rank): when it starts, every
`HEARTBEAT_SECONDS` while it runs, and at `finalize`; never per event. It holds the status
(``running`` until `finalize`), start and end time, duration, the last scalar metrics and the
time of writing (``heartbeat_time``). A ``running`` summary whose heartbeat is more than
`STALE_AFTER_BEATS` beats old is listed as ``stale``: its process most likely died (preempted,
killed) before `finalize`. `logged_runs` turns one key listing of a root plus
one GET per summary into one entry per run (experiment name in a logs folder), so a root of
hundreds of runs is listed without reading any log. A run whose logger predates the catalog has
no summary: it is still listed, from its log keys, with ``summary: False`` and no status.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from ..errors import StoreError
from ..store.base import Store
from .json_lines import to_json
from .layout import SEGMENTS_SUFFIX, STRUCTURED_SUFFIX, SUMMARY_SUFFIX, split_stem
from .line_format import Item

FORMAT = "expstore-run-summary/1"
RUNNING = "running"
STALE = "stale"  # running, says the summary, but its heartbeat stopped
HEARTBEAT_SECONDS = 60.0  # one small PUT a minute per running logger
STALE_AFTER_BEATS = 5  # missed beats (by the writer's own interval) before a running run is stale
_SCALARS = (int, float, str, bool, type(None))
_LOGS_FOLDER = "logs"  # the demo layout's <run>/logs: the run is the folder above it

__all__ = [
    "FORMAT",
    "HEARTBEAT_SECONDS",
    "RUNNING",
    "STALE",
    "STALE_AFTER_BEATS",
    "SummaryTracker",
    "iso_seconds",
    "iso_time",
    "logged_runs",
    "overall_status",
    "run_folder",
    "summary_status",
]


def iso_time(seconds: float) -> str:
    """A unix time as local ISO time with its UTC offset, as the logs and summaries write times."""
    return datetime.fromtimestamp(seconds).astimezone().isoformat()


def iso_seconds(stamp: Any) -> float | None:
    """An ISO timestamp as an instant, so that ranks in different time zones compare right; None when unreadable."""
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


def _instant(stamp: Any) -> float:
    """`iso_seconds` as a sort key: an unreadable timestamp counts as 0 (before any run)."""
    seconds = iso_seconds(stamp)
    return 0.0 if seconds is None else seconds


def _scalar(value: Any) -> bool:
    """Whether a metric value is small enough for a summary (numbers, strings, numpy scalars)."""
    return isinstance(value, _SCALARS) or (hasattr(value, "item") and getattr(value, "ndim", 1) == 0)


class SummaryTracker:
    """What a log sink knows about its run, kept up to date from the events it formats."""

    def __init__(self, name: str, rank: int | None):
        self.doc: dict[str, Any] = {"format": FORMAT, "experiment_name": name, "rank": rank, "status": RUNNING,
                                    "start_time": None, "end_time": None, "duration_seconds": None}
        self.metrics: dict[str, Any] = {}
        self.start_due = False  # a start summary is waiting to be written

    def see_many(self, items: list[Item]) -> None:
        """Take note of a batch of queued items (metrics, start, end), in order."""
        update = self.metrics.update
        for ts, _, _, event_type, data, _ in items:
            if event_type == "metrics" or event_type == "progress":
                if type(data["metrics"]) is dict:
                    update(data["metrics"])
            elif event_type == "experiment_start":
                self.doc.update(status=RUNNING, start_time=data.get("start_time"), end_time=None, duration_seconds=None,
                                session=data.get("session"))
                self.start_due = True
            elif event_type == "experiment_end":
                self.doc.update(status=data.get("final_status"), end_time=iso_time(ts), duration_seconds=data.get("duration_seconds"))

    def to_bytes(self) -> bytes:
        """The summary object: the document, the last scalar value of each metric, and the heartbeat."""
        metrics = {k: v for k, v in self.metrics.items() if _scalar(v)}
        beat = {"heartbeat_time": iso_time(time.time()), "heartbeat_seconds": HEARTBEAT_SECONDS}
        return (to_json({**self.doc, "final_metrics": metrics, **beat}) + "\n").encode()


# ---- reading: the catalog of a root -------------------------------------------------------------


def _log_key(key: str) -> tuple[str, str, bool] | None:
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


def summary_status(doc: dict[str, Any], now: float) -> Any:
    """The status a summary says, or `STALE` for a running one whose heartbeat is `STALE_AFTER_BEATS` beats
    old at `now` (a summary without a heartbeat, from an older logger, stays as it says)."""
    status, beat, every = doc.get("status"), _instant(doc.get("heartbeat_time")), doc.get("heartbeat_seconds")
    if status == RUNNING and beat > 0 and isinstance(every, (int, float)) and now - beat > STALE_AFTER_BEATS * every:
        return STALE
    return status


def overall_status(statuses: list[Any], running: Any = RUNNING) -> Any:
    """The status of a run of several ranks: `running` while any rank is, else the first that is not "completed"."""
    if any(s == running for s in statuses):
        return running
    return next((s for s in statuses if s != "completed"), "completed")


def run_folder(folder: str) -> str:
    """The run a logs folder belongs to: the folder above ``<run>/logs``, else the folder itself."""
    parent, _, last = folder.rpartition("/")
    return parent if last == _LOGS_FOLDER else folder


def logged_runs(store: Store, keys: list[str]) -> list[dict[str, Any]]:
    """One entry per (logs folder, experiment) in `keys` (a listing of `store`), from its summaries; sorted by folder, name.

    Entry: ``folder`` (relative to the store), ``run_folder``, ``name``, ``summary`` (whether
    summaries were found), ``status`` (None without summary; ``stale`` for a running one whose
    heartbeat stopped), ``start_time``, ``end_time``, ``duration_seconds``, ``ranks`` (how many
    ranks logged; 1 without ranks), ``final_metrics`` (the lowest rank's), ``heartbeat_time``
    (the newest). One GET per summary object; nothing else is read.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for key in keys:
        found = _log_key(key)
        if found is None:
            continue
        folder, stem, is_summary = found
        name, rank = split_stem(stem)
        group = groups.setdefault((folder, name), {"summaries": {}, "ranks": set()})
        group["ranks"].add(rank)
        if is_summary:
            group["summaries"][rank] = key
    return [_entry(store, folder, name, group) for (folder, name), group in sorted(groups.items())]


def _entry(store: Store, folder: str, name: str, group: dict[str, Any]) -> dict[str, Any]:
    """The catalog entry of one experiment in one folder, from its summary objects."""
    docs = []
    for rank in sorted(group["summaries"], key=lambda r: -1 if r is None else r):
        try:
            doc = json.loads(store.read(group["summaries"][rank]))
        except (StoreError, ValueError):
            continue  # deleted meanwhile, or not a summary: the run is still listed, from its keys
        if isinstance(doc, dict) and doc.get("format") == FORMAT:
            docs.append(doc)
    entry: dict[str, Any] = {"name": name, "folder": folder, "run_folder": run_folder(folder), "summary": bool(docs),
                             "status": None, "start_time": None, "end_time": None, "duration_seconds": None,
                             "ranks": len(group["ranks"]), "final_metrics": {}, "heartbeat_time": None}
    if docs:
        now = time.time()
        starts = [d["start_time"] for d in docs if d.get("start_time")]
        ends = [d["end_time"] for d in docs if d.get("end_time")]
        beats = [d["heartbeat_time"] for d in docs if d.get("heartbeat_time")]
        durations = [d["duration_seconds"] for d in docs if isinstance(d.get("duration_seconds"), (int, float))]
        entry.update(status=overall_status([summary_status(d, now) for d in docs]),
                     heartbeat_time=max(beats, key=_instant, default=None), start_time=min(starts, key=_instant, default=None),
                     end_time=max(ends, key=_instant, default=None) if len(ends) == len(docs) else None,
                     duration_seconds=max(durations, default=None) if len(durations) == len(docs) else None,
                     final_metrics=docs[0].get("final_metrics") or {})
    return entry
