"""The run catalog: one small summary object per logger, and the listing of runs built from them.

Every `ExperimentLogger` that writes files also writes ``<stem>_run.json`` next to its logs
(``<name>_run.json``, or ``<name>.rank<r>_run.json`` per rank): when it starts, every
`HEARTBEAT_SECONDS` while it runs, and at `finalize`; never per event. It holds the status
(``running`` until `finalize`), start and end time, duration, the last scalar metrics and the
time of writing (``heartbeat_time``); after `log_config` also ``params`` (the config flattened
with ``.`` joins, written at the next flush) and ``tags`` (``host``, ``git_commit``, ``git_dirty``).
The document format itself lives in `expstore.format.run_summary`. A ``running`` summary whose heartbeat is more than
`STALE_AFTER_BEATS` beats old is listed as ``stale``: its process most likely died (preempted,
killed) before `finalize`. `logged_runs` turns one key listing of a root plus
one GET per summary into one entry per run (experiment name in a logs folder), so a root of
hundreds of runs is listed without reading any log. A run whose logger predates the catalog has
no summary: it is still listed, from its log keys, with ``summary: False`` and no status.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import StoreError
from ..format.run_summary import (
    FORMAT,
    RUNNING,
    STALE,
    STALE_AFTER_BEATS,
    environment_tags,
    flatten_params,
    instant,
    iso_seconds,
    iso_time,
    log_key,
    overall_status,
    parse_summary,
    run_folder,
    split_stem,
    summary_status,
)
from ..store.base import Store
from .json_lines import to_json
from .line_format import Item

HEARTBEAT_SECONDS = 60.0  # one small PUT a minute per running logger
_SCALARS = (int, float, str, bool, type(None))

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


def _scalar(value: Any) -> bool:
    """Whether a metric value is small enough for a summary (numbers, strings, numpy scalars)."""
    return isinstance(value, _SCALARS) or (hasattr(value, "item") and getattr(value, "ndim", 1) == 0)


class SummaryTracker:
    """What a log sink knows about its run, kept up to date from the events it formats."""

    def __init__(self, name: str, rank: int | None):
        self.doc: dict[str, Any] = {"format": FORMAT, "experiment_name": name, "rank": rank, "status": RUNNING,
                                    "start_time": None, "end_time": None, "duration_seconds": None}
        self.metrics: dict[str, Any] = {}
        self.start_due = False  # a summary is waiting to be written (after the start or a config)

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
            elif event_type == "config" and type(data) is dict and isinstance(data.get("config"), dict):
                self.doc["params"] = flatten_params(data["config"])
                self.doc["tags"] = {**self.doc.get("tags", {}), **environment_tags(data.get("environment"))}
                self.start_due = True  # the params reach the catalog at the next flush, not the next heartbeat
            elif event_type == "experiment_end":
                self.doc.update(status=data.get("final_status"), end_time=iso_time(ts),
                                duration_seconds=data.get("duration_seconds"))

    def to_bytes(self) -> bytes:
        """The summary object: the document, the last scalar value of each metric, and the heartbeat."""
        metrics = {k: v for k, v in self.metrics.items() if _scalar(v)}
        beat = {"heartbeat_time": iso_time(time.time()), "heartbeat_seconds": HEARTBEAT_SECONDS}
        return (to_json({**self.doc, "final_metrics": metrics, **beat}) + "\n").encode()


# ---- reading: the catalog of a root -------------------------------------------------------------


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
        found = log_key(key)
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
            doc = parse_summary(store.read(group["summaries"][rank]))
        except StoreError:
            continue  # deleted meanwhile: the run is still listed, from its keys
        if doc is not None:
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
                     heartbeat_time=max(beats, key=instant, default=None), start_time=min(starts, key=instant, default=None),
                     end_time=max(ends, key=instant, default=None) if len(ends) == len(docs) else None,
                     duration_seconds=max(durations, default=None) if len(durations) == len(docs) else None,
                     final_metrics=docs[0].get("final_metrics") or {})
    return entry
