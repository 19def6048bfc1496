"""The runs table: the catalog kept in sync with the root by a background thread, searched a page at a time."""

from __future__ import annotations

import math
import threading
import time
import warnings
from typing import Any

import pandas as pd

from ..catalog import Catalog
from ..store.base import Store
from .access import ApiError

__all__ = ["DEFAULT_ORDER", "RunsView", "run_row"]

DEFAULT_ORDER = ["start_time DESC"]
SYNC_SHARE = 5  # pause between syncs >= this many times the last sync's duration
_BASE = ("run_id", "name", "url", "status")
_PREFIXES = ("params.", "metrics.", "tags.")


def _plain(value: Any) -> Any:
    """A DataFrame cell as JSON: missing and non-finite as None, timestamps as unix seconds, numpy as Python."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, pd.Timestamp):
        return value.timestamp()
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_row(record: dict[str, Any]) -> dict[str, Any]:
    """One search result row as the API's run object: base fields, then params / metrics / tags as maps."""
    run: dict[str, Any] = {key: _plain(record.get(key)) for key in (*_BASE, "start_time", "end_time", "duration_seconds")}
    for prefix in _PREFIXES:
        values = {k[len(prefix):]: _plain(v) for k, v in record.items() if k.startswith(prefix)}
        run[prefix[:-1]] = {k: v for k, v in values.items() if v is not None}
    return run


class RunsView:
    """Searches of one root's runs in a catalog that a daemon thread re-syncs every `refresh_seconds`."""

    def __init__(self, store: Store, catalog: Catalog, refresh_seconds: float):
        self.store, self.catalog, self.refresh_seconds = store, catalog, refresh_seconds
        self.sync_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counts: dict[str | None, tuple[int, tuple[int, dict[str, list[str]]]]] = {}
        self.generation = 0  # counts the syncs, so cached counts know when they are out of date

    def sync(self) -> None:
        """One sync of the catalog from the root; a failure is kept (and warned once), never raised."""
        try:
            self.catalog.sync(self.store)
        except Exception as exc:  # noqa: BLE001 - a store or database hiccup must not stop the dashboard
            if self.sync_error is None:
                warnings.warn(f"expstore ui: syncing the catalog from {self.store.url} failed: {exc}", RuntimeWarning,
                              stacklevel=2)
            self.sync_error = f"{type(exc).__name__}: {exc}"
        else:
            self.sync_error = None
        self.generation += 1

    def start(self) -> None:
        """Sync once now, then keep syncing in the background until `stop`."""
        self.sync()
        self._thread = threading.Thread(target=self._loop, name="expstore-ui-sync", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """Sync every `refresh_seconds`, or five sync durations when a sync takes longer (a huge root
        then costs at most a fifth of a core)."""
        pause = self.refresh_seconds
        while not self._stop.wait(pause):
            started = time.monotonic()
            self.sync()
            pause = max(self.refresh_seconds, SYNC_SHARE * (time.monotonic() - started))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _count(self, filter: str | None) -> tuple[int, dict[str, list[str]]]:
        """`Catalog.count` of `filter`, kept until the next sync (sorting and paging do not change it)."""
        with self._lock:
            cached = self._counts.get(filter)
            if cached is not None and cached[0] == self.generation:
                return cached[1]
        generation, counted = self.generation, self.catalog.count(self.store, filter)
        with self._lock:
            self._counts = {k: v for k, v in self._counts.items() if v[0] == generation}
            self._counts[filter] = (generation, counted)
        return counted

    def page(self, filter: str | None, order_by: list[str], limit: int, offset: int) -> dict[str, Any]:
        """``{"total", "offset", "runs", "param_keys", "metric_keys", "tag_keys"}`` of one page of a search."""
        try:
            total, keys = self._count(filter or None)
            frame = self.catalog.search(self.store, filter or None, order_by or DEFAULT_ORDER, limit, offset=offset)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return {
            "total": total, "offset": offset, "runs": [run_row(r) for r in frame.to_dict("records")],
            "param_keys": keys["params"], "metric_keys": keys["metrics"], "tag_keys": keys["tags"],
        }
