"""One run's logged events, read from its store incrementally and shared by every request about it.

A local run's JSONL only grows: a refresh reads just the bytes past what was read before. On a store
without append a running logger adds numbered segments, which never change: a refresh reads just
the new ones. Any other change (a finalize that merged the segments, another rank, a rewrite)
re-reads the run's logs whole through the logger's own reader. Cursors are positions in the event list, so
a page that polls with ``since=<cursor>`` receives each event once.
"""

from __future__ import annotations

import bisect
import json
import threading
import time
import warnings
from collections import Counter
from typing import Any

import orjson

from ..errors import KeyNotFound
from ..experiment_logger import load_structured_logs
from ..format.metric_points import metric_points
from ..format.run_summary import SEGMENTS_SUFFIX, STRUCTURED_SUFFIX, log_key, split_stem
from ..store.base import Store
from ..store.prefixed import PrefixedStore

__all__ = ["MIN_CHECK_SECONDS", "TAIL", "RunLog", "folder_store"]

MIN_CHECK_SECONDS = 0.2  # requests closer together than this share one look at the store
TAIL = 64  # bytes before the read offset compared on the next read


def _identity(event: dict[str, Any]) -> bytes:
    """An event's content as bytes, equal for the same event read twice."""
    try:
        return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an int beyond 64 bits
        return json.dumps(event, sort_keys=True, default=repr).encode()


def folder_store(store: Store, folder: str) -> Store:
    """The store seen from `folder` of `store` (the store itself for the root)."""
    return PrefixedStore(store, folder, f"{store.url.rstrip('/')}/{folder}") if folder else store


class _Series:
    """The points of one metric, with the index of the event each came from (for ``since=``)."""

    __slots__ = ("at", "step", "time", "value")

    def __init__(self) -> None:
        self.at: list[int] = []
        self.step: list[int | None] = []
        self.time: list[float] = []
        self.value: list[float | None] = []

    def since(self, cursor: int) -> dict[str, list[Any]]:
        start = bisect.bisect_left(self.at, cursor)
        return {"step": self.step[start:], "time": self.time[start:], "value": self.value[start:]}


class RunLog:
    """The events of experiment `name` in logs folder `folder` of `store`, and its metric series."""

    def __init__(self, store: Store, folder: str, name: str):
        self.store, self.folder, self.name = store, folder, name
        self._prefix = f"{folder}/{name}" if folder else name
        self._final = f"{self._prefix}{STRUCTURED_SUFFIX}"
        self._segments = f"{self._prefix}{SEGMENTS_SUFFIX}/"
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._versions: dict[str, str] = {}
        self._offset = 0  # bytes of the final JSONL read, when it is the run's only log
        self._tail = b""  # the last bytes before `_offset`, to tell a log that grew from one rewritten
        self.events: list[dict[str, Any]] = []
        self._series: dict[str, _Series] = {}

    def _own_versions(self) -> dict[str, str]:
        """{key: version} of this experiment's structured logs and segments (every rank), from one listing."""
        found = {}
        for key, version in self.store.list_versions(self._prefix).items():
            parsed = log_key(key)
            if (parsed and not parsed[2] and parsed[0] == self.folder and split_stem(parsed[1])[0] == self.name
                    and key.endswith(".jsonl")):  # not the text segments beside the JSON ones
                found[key] = version
        return found

    def refresh(self) -> None:
        """Bring the events up to date with the store (at most one look per `MIN_CHECK_SECONDS`)."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked < MIN_CHECK_SECONDS:
                return
            versions = self._own_versions()
            if versions != self._versions:
                if set(versions) == {self._final}:
                    if not set(self._versions) <= {self._final}:
                        self._reset()  # segments were merged into the final file: read it from the start
                    self._read_more()
                elif self._only_new_segments(versions):
                    fresh = [self.store.read(key) for key in sorted(set(versions) - set(self._versions))]
                    for data in fresh:  # added only once all are read: a failed read leaves the log as it was
                        self._add_lines(data)
                else:
                    self._read_all()
                self._versions = versions
            self._checked = time.monotonic()

    def _read_more(self) -> None:
        """Parse the complete lines past `_offset` of the only log, the final JSONL. A log whose bytes
        before `_offset` are not those read before (rewritten, shorter) is read again from the start."""
        start = max(0, self._offset - len(self._tail))
        data = self.store.read_range(self._final, start)
        if data[: self._offset - start] != self._tail:
            self._reset()
            data, start = self.store.read_range(self._final, 0), 0
        new = memoryview(data)[self._offset - start:]
        end = bytes(new).rfind(b"\n") + 1  # a line still being written waits for the next refresh
        self._add_lines(bytes(new[:end]))
        self._offset += end
        self._tail = bytes(memoryview(data)[max(0, self._offset - start - TAIL): self._offset - start])

    def _only_new_segments(self, versions: dict[str, str]) -> bool:
        """Whether the change is new segments of this (unranked) run after those already read, and nothing else
        (a final file from an earlier session, unchanged, may sit beside them)."""
        old = self._versions
        new = set(versions) - set(old)
        read_segments = [k for k in old if k.startswith(self._segments)]
        return (bool(new) and all(k.startswith(self._segments) for k in new)
                and all(k == self._final or k.startswith(self._segments) for k in versions)
                and all(versions.get(k) == v for k, v in old.items()) and min(new) > max(read_segments, default=""))

    def _add_lines(self, data: bytes) -> None:
        """Add the events of complete JSON lines (unreadable ones are skipped, as the reader skips them)."""
        for line in data.split(b"\n"):
            if line.strip():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and "event_type" in event:
                    self._add(event)

    def _read_all(self) -> None:
        """Re-read every log of the run through the logger's reader (which merges segments and ranks and
        drops lines that a finalize merging segments made appear twice). Events not seen before are
        added at the end, in the order they arrive, so a rank that flushed late does not move a cursor;
        when events seen before are gone (a log rewritten), the run's events start again."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # torn last lines of a live run: skipped, as the reader says
            try:
                events = load_structured_logs(folder_store(self.store, self.folder), self.name)
            except KeyNotFound:
                events = []
        seen = Counter(_identity(e) for e in self.events)
        fresh = []
        for event in events:
            identity = _identity(event)
            if seen[identity]:
                seen[identity] -= 1
            else:
                fresh.append(event)
        if any(seen.values()):
            self._reset()
            fresh = events
        for event in fresh:
            self._add(event)

    def _reset(self) -> None:
        self.events, self._series, self._offset, self._tail = [], {}, 0, b""

    def _add(self, event: dict[str, Any]) -> None:
        """Append one event, and its metric values to their series."""
        at = len(self.events)
        self.events.append(event)
        for key, step, seconds, value in metric_points(event):
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series()
            series.at.append(at)
            series.step.append(step)
            series.time.append(seconds)
            series.value.append(value)

    def metrics_since(self, cursor: int) -> dict[str, Any]:
        """``{"cursor", "series": {metric: {"step", "time", "value"}}}`` of the points after `cursor`."""
        self.refresh()
        with self._lock:
            series = {key: s.since(cursor) for key, s in self._series.items()}
            return {"cursor": len(self.events), "series": {k: v for k, v in series.items() if v["value"]}}

    def events_since(self, cursor: int | None, limit: int) -> dict[str, Any]:
        """``{"cursor", "events"}``: the last `limit` events, or those after `cursor` (the newest `limit` of them)."""
        self.refresh()
        with self._lock:
            start = len(self.events) - limit if cursor is None else max(cursor, len(self.events) - limit)
            return {"cursor": len(self.events), "events": self.events[max(start, 0):]}

    def config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(config, environment) of the run's last config event ({} when it logged none)."""
        self.refresh()
        with self._lock:
            for event in reversed(self.events):
                data = event.get("data")
                if event.get("event_type") == "config" and isinstance(data, dict):
                    config, environment = data.get("config"), data.get("environment")
                    return (config if isinstance(config, dict) else {}), (environment if isinstance(environment, dict) else {})
        return {}, {}
