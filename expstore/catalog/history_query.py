"""The metric history of runs as a DataFrame (what a dashboard charts): one row per logged point."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Connection

from .query import utc_times
from .schema import metric_history, runs
from .writing import chunks

__all__ = ["HISTORY_COLUMNS", "check_names", "history", "missing_runs"]

HISTORY_COLUMNS = ("run_id", "key", "step", "timestamp", "value")


def check_names(value: str | Sequence[str] | None, what: str, allow_none: bool = True) -> list[str] | None:
    """`value` as a list of str (one str is a list of one; None stays None if allowed); `TypeError` naming `what` otherwise."""
    if value is None and allow_none:
        return None
    items = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, tuple)) else None
    if items is None or not all(isinstance(v, str) for v in items):
        raise TypeError(f"{what} must be a str or a list of str, got {value!r:.80}")
    return items


def missing_runs(conn: Connection, uids: list[str]) -> list[str]:
    """The uids among `uids` that the catalog holds no run of."""
    held: set[str] = set()
    for part in chunks(uids):
        held.update(conn.execute(select(runs.c.uid).where(runs.c.uid.in_(part))).scalars())
    return [u for u in uids if u not in held]


def history(conn: Connection, uids: dict[str, str], keys: list[str] | None) -> pd.DataFrame:
    """The points of the runs `uids` (uid -> the run_id to show) for `keys` (None: all), ordered by run, key,
    step (points without a step last) and time; a point the catalog holds twice (a segment and the final
    log that merged it, read while both existed) is shown once."""
    h = metric_history.c
    found: list[tuple[str, str, int | None, float, float | None]] = []
    for part in chunks(list(uids)):
        stmt = (select(runs.c.uid, h.key, h.step, h.timestamp, h.value).distinct()
                .join_from(metric_history, runs, runs.c.id == h.run).where(runs.c.uid.in_(part)))
        if keys is not None:
            stmt = stmt.where(h.key.in_(keys))
        found += conn.execute(stmt).all()
    frame = pd.DataFrame({
        "run_id": pd.array([uids[r[0]] for r in found], dtype="string"),
        "key": pd.array([r[1] for r in found], dtype="string"),
        "step": pd.array([r[2] for r in found], dtype="Int64"),
        "timestamp": utc_times([r[3] for r in found]),
        "value": pd.Series([r[4] for r in found], dtype="float64"),
    })
    return frame.sort_values(["run_id", "key", "step", "timestamp"], na_position="last", kind="stable", ignore_index=True)
