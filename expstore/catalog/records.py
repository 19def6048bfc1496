"""`RunRecord`, one run as the catalog holds it, and how one is built from a run's summary documents."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..format.run_summary import RUNNING, iso_seconds, overall_status, run_folder
from ..store.locate import join_url

__all__ = ["RunRecord", "param_text", "record_from_summaries"]

_NUMBER = re.compile(r"^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$")


@dataclass
class RunRecord:
    """One run: ``join_url(root, run_id)`` is its identity (the URL of its logs folder joined with its name).

    A logger pushing its own run passes its output URL as `root` and its experiment name as
    `run_id`; a sync of a root above it finds the same run as ``<folder>/<name>`` under that root.
    Times are unix seconds; `params` are the flattened config (any JSON scalar or list), `metrics`
    the last value of each scalar metric, `tags` str -> str. `heartbeat_time` and `heartbeat_seconds`
    let a search report a ``running`` run whose writer stopped as ``stale``.
    """

    root: str
    run_id: str
    name: str
    url: str
    status: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    duration_seconds: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    heartbeat_time: float | None = None
    heartbeat_seconds: float | None = None

    @property
    def uid(self) -> str:
        """The run's identity in the catalog."""
        return join_url(self.root, self.run_id)


def param_text(value: Any) -> tuple[str, float | None]:
    """A param as (text, number or None): str kept, bool ``True``/``False``, numbers as Python writes them,
    lists and dicts as JSON; the number when the value is one or its text parses as a finite one."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bool, int, float)) or value is None:
        text = str(value)
    else:
        try:
            text = json.dumps(value, sort_keys=True, allow_nan=True, default=str)
        except (TypeError, ValueError):
            text = str(value)
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.match(value))):
        return text, None
    try:
        number = float(value)
    except (OverflowError, ValueError):
        return text, None
    return text, number if math.isfinite(number) else None


def _metric(value: Any) -> float | None:
    """A metric's last value as a float; None for values that are not numbers (strings)."""
    if isinstance(value, (int, float)):  # bool too: it is a 0/1 metric
        return float(value)
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def record_from_summaries(root: str, folder: str, name: str, docs: list[Mapping[str, Any]]) -> RunRecord:
    """The run of experiment `name` in logs folder `folder` of `root`, from its summaries (one per rank, lowest first)."""
    starts = [s for s in (iso_seconds(d.get("start_time")) for d in docs) if s is not None]
    ends = [s for s in (iso_seconds(d.get("end_time")) for d in docs) if s is not None]
    durations = [d for d in (_number(d.get("duration_seconds")) for d in docs) if d is not None]
    running = [d for d in docs if d.get("status") == RUNNING] or list(docs)
    beats = [s for s in (iso_seconds(d.get("heartbeat_time")) for d in running) if s is not None]
    everies = [e for e in (_number(d.get("heartbeat_seconds")) for d in running) if e is not None]
    params: dict[str, Any] = {}
    tags: dict[str, str] = {}
    for doc in reversed(docs):  # the lowest rank wins where ranks differ
        params.update(doc.get("params") or {})
        tags.update({str(k): str(v) for k, v in (doc.get("tags") or {}).items()})
    metrics = {str(k): v for k, v in ((k, _metric(v)) for k, v in (docs[0].get("final_metrics") or {}).items()) if v is not None}
    run_id = f"{folder}/{name}" if folder else name
    return RunRecord(
        root=root, run_id=run_id, name=name, url=join_url(root, run_folder(folder)) if run_folder(folder) else root,
        status=overall_status([d.get("status") for d in docs]),
        start_time=min(starts, default=None), end_time=max(ends) if ends and len(ends) == len(docs) else None,
        duration_seconds=max(durations) if durations and len(durations) == len(docs) else None,
        params=params, metrics=metrics, tags=tags,
        heartbeat_time=max(beats, default=None), heartbeat_seconds=max(everies, default=None),
    )

