"""Read an experiment's logs back from any store, finalized or not (segments of a running or crashed run).

A location is the URL or path of ``<name>_structured.jsonl`` / ``<name>.log`` (which need not
exist yet on a store without append: its segments are read), or the folder holding them plus
``experiment_name=`` (optional when the folder holds one experiment), or an open `Store`.
An experiment written by several ranks (``<name>.rank<r>...`` keys) is read as one: its ranks'
events merged by timestamp; the URL of one rank's file (``<name>.rank2_structured.jsonl``) reads
that rank only.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import KeyNotFound
from ..store.base import Store
from ..store.locate import opened_store, split_url_at
from .layout import (
    STRUCTURED_SUFFIX,
    TEXT_SUFFIX,
    experiments_in,
    join_lines,
    segments_prefix,
    split_stem,
    stem_of,
    structured_key,
    text_key,
)
from .summaries import iso_seconds, overall_status

__all__ = ["analyze_logs", "load_structured_logs", "load_text_log"]

READ_ATTEMPTS = 3  # a segment can vanish while we read it (finalize merged it): read again


@contextlib.contextmanager
def _opened_experiment(
    location: Any, experiment_name: str | None, storage_options: dict[str, Any]
) -> Iterator[tuple[Store, str]]:
    """(store, experiment name) of a reader's location for the length of the block; a store this opened is closed after."""
    if isinstance(location, os.PathLike):
        location = os.fspath(location)
    if isinstance(location, str) and experiment_name is None:
        path = location.rstrip("/")
        last = path.rpartition("/")[2]
        for suffix in (STRUCTURED_SUFFIX, TEXT_SUFFIX):
            if last.endswith(suffix) and len(last) > len(suffix):
                location, experiment_name = split_url_at(path)[0], last[: -len(suffix)]
                break
    with opened_store(location, **storage_options) as store:
        if experiment_name is None:
            found = experiments_in(store.list(""))
            if not found:
                raise KeyNotFound("no experiment logs here", url=store.url)
            if len(found) > 1:
                raise ValueError(f"{store.url!r} holds the logs of {found!r}; pass experiment_name=")
            experiment_name = found[0]
        yield store, experiment_name


def _stems(store: Store, name: str) -> dict[str, list[str]]:
    """{stem: its listed keys} for `name` and each of its ranks, in rank order, from one LIST."""
    found: dict[str, list[str]] = {}
    for key in store.list(name):
        stem = stem_of(key)
        if stem is not None and (stem == name or split_stem(stem)[0] == name):
            found.setdefault(stem, []).append(key)
    order = sorted(found, key=lambda stem: -1 if stem == name else split_stem(stem)[1] or 0)
    return {stem: found[stem] for stem in order}


def _read_all(store: Store, name: str, kind: str) -> list[tuple[list[tuple[str, bytes]], bool]]:
    """Per stem of `name`: ([(key, bytes)] of its final file of `kind` then its segments, whether both exist)."""
    final_of = structured_key if kind == "jsonl" else text_key
    for attempt in range(READ_ATTEMPTS):
        stems = _stems(store, name)
        out = []
        try:
            for stem, keys in stems.items():
                final = final_of(stem)
                segments = [k for k in keys if k.startswith(segments_prefix(stem)) and k.endswith(f".{kind}")]
                sources = [(k, store.read(k)) for k in ([final] if final in keys else []) + segments]
                if sources:
                    out.append((sources, bool(segments) and final in keys))
        except KeyNotFound:
            if attempt + 1 < READ_ATTEMPTS:
                continue  # merged and deleted by a finalize meanwhile: the final file has it now
            raise
        if not out:
            raise KeyNotFound("no logs of this experiment (neither the final file nor segments)", url=store.url, key=final_of(name))
        return out
    raise AssertionError("unreachable")


def _parse(sources: Iterable[tuple[str, bytes]], url: str, dedupe: bool) -> list[dict[str, Any]]:
    """The events of JSONL sources; unreadable lines (a torn last line of a killed run) are skipped with a warning."""
    events: list[dict[str, Any]] = []
    seen: set[bytes] = set()
    skipped: list[str] = []
    for index, (key, data) in enumerate(sources):
        lines = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if dedupe:
                if index == 0:
                    seen.add(line)
                elif line in seen:  # read while finalize merged this segment into the final file
                    continue
            try:
                event = json.loads(line)
                if not isinstance(event, dict) or "event_type" not in event:
                    raise ValueError("not an event object")
            except (ValueError, UnicodeDecodeError):
                torn = number == len(lines)  # no newline after it: the writer died mid-line
                skipped.append(f"{key} line {number}{' (truncated last line)' if torn else ''}")
                continue
            events.append(event)
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} unreadable log line(s) in {url}: {', '.join(skipped[:5])}"
            + (" ..." if len(skipped) > 5 else ""),
            RuntimeWarning,
            stacklevel=3,
        )
    return events


def load_structured_logs(
    url_or_path: Any, experiment_name: str | None = None, **storage_options: Any
) -> list[dict[str, Any]]:
    """All events of an experiment, oldest first, from the final JSONL files and/or segments of every rank.

    Each rank's events keep their written order; the ranks are merged by timestamp.
    """
    with _opened_experiment(url_or_path, experiment_name, storage_options) as (store, name):
        per_stem = [_parse(sources, store.url, dedupe) for sources, dedupe in _read_all(store, name, "jsonl")]
    return _merged(per_stem)


def _timed(events: list[dict[str, Any]]) -> Iterator[tuple[float, dict[str, Any]]]:
    """(seconds, event) of one rank's events; an unreadable timestamp takes the one before it, keeping the order."""
    last = float("-inf")
    for event in events:
        seconds = iso_seconds(event.get("timestamp"))
        last = last if seconds is None else seconds
        yield last, event


def _merged(per_stem: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The events of all ranks ordered by timestamp, each rank's own order kept."""
    if len(per_stem) == 1:
        return per_stem[0]
    return [event for _, event in heapq.merge(*map(_timed, per_stem), key=lambda pair: pair[0])]


def load_text_log(url_or_path: Any, experiment_name: str | None = None, **storage_options: Any) -> str:
    """The human-readable log of an experiment, from the final `.log` files and/or segments (rank after rank)."""
    with _opened_experiment(url_or_path, experiment_name, storage_options) as (store, name):
        return join_lines([data for sources, _ in _read_all(store, name, "log") for _, data in sources]).decode("utf-8", "replace")


def _summary(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Event counts, final status of the last session, times and last metrics of a list of events."""
    counts: dict[str, int] = {}
    last_metrics: dict[str, Any] = {}
    final_status = None
    for event in events:
        kind = event.get("event_type")
        counts[kind] = counts.get(kind, 0) + 1
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        if kind in ("metrics", "progress") and isinstance(data.get("metrics"), dict):
            last_metrics.update(data["metrics"])
        elif kind == "experiment_start":
            final_status = None
        elif kind == "experiment_end":
            final_status = data.get("final_status")
    times = [t for t in (iso_seconds(e.get("timestamp")) for e in events) if t is not None]
    return {
        "total_events": len(events),
        "event_counts": counts,
        "final_status": final_status,
        "start_time": events[0].get("timestamp") if events else None,
        "end_time": events[-1].get("timestamp") if events else None,
        "duration_seconds": max(times) - min(times) if times else None,
        "sessions": counts.get("experiment_start", 0),
        "errors": counts.get("error", 0),
        "final_metrics": last_metrics,
    }


def analyze_logs(url_or_path: Any, experiment_name: str | None = None, **storage_options: Any) -> dict[str, Any]:
    """Summary of a run: event counts, final status (None while running or after a crash), duration, last metrics.

    Also takes an already loaded list of events. With events of more than one rank, ``per_rank``
    maps each rank (None for events written without a rank) to the same summary of its events,
    and ``final_status`` is the run's: None while any rank has none, else the first rank's status
    that is not ``completed``.
    """
    if isinstance(url_or_path, list):
        events = url_or_path
        bad = next((i for i, event in enumerate(events) if not isinstance(event, dict)), None)
        if bad is not None:
            raise TypeError(
                f"analyze_logs takes a log location (URL, path or Store) or a list of event dicts as "
                f"load_structured_logs returns; item {bad} of the list is {type(events[bad]).__name__} {events[bad]!r:.80}"
            )
    else:
        events = load_structured_logs(url_or_path, experiment_name, **storage_options)
    result = _summary(events)
    by_rank: dict[int | None, list[dict[str, Any]]] = {}
    for event in events:
        by_rank.setdefault(event.get("rank"), []).append(event)
    if len(by_rank) > 1:
        ranks = sorted(by_rank, key=lambda r: -1 if r is None else r)
        result["per_rank"] = {rank: _summary(by_rank[rank]) for rank in ranks}
        result["ranks"] = len(ranks)
        result["final_status"] = overall_status([result["per_rank"][r]["final_status"] for r in ranks], running=None)
    return result
