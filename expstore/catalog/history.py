"""Metric history from the loggers' event logs (``<stem>_structured.jsonl`` and its JSONL segments).

Each such source is read again only when its version token changed, and then from where the last
read stopped when it only grew (the bytes just before that point are still there); a source that
changed otherwise is read whole and its points replaced. Points are ``(key, step, timestamp, value)``
from "metrics" events (``data.step``) and "progress" events (``data.iteration`` as the step).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import KeyNotFound
from ..format.metric_points import Point, metric_points
from ..format.run_summary import SEGMENTS_SUFFIX, STRUCTURED_SUFFIX, SUMMARY_SUFFIX, log_key
from ..store.base import Store

__all__ = ["TAIL", "Known", "Read", "changed_sources", "is_source", "parse_points", "read_source", "summary_of"]

TAIL = 64  # bytes before the read offset kept, to recognise a source that only grew
_SEGMENT_MARK = f"{SEGMENTS_SUFFIX}/"


@dataclass(frozen=True)
class Known:
    """What the catalog kept of a source it read: its row id, run, version token, bytes read and their last bytes."""

    id: int
    run: int
    version: str
    read_bytes: int
    tail: str


@dataclass(frozen=True)
class Read:
    """One read of a source: the points found, the new read offset and tail, and whether they replace the old points."""

    key: str
    points: list[Point]
    read_bytes: int
    tail: str
    replace: bool


def is_source(key: str) -> bool:
    """Whether `key` is a structured log or a JSONL segment of one (cheap string tests: every listed key is asked)."""
    return key.endswith(STRUCTURED_SUFFIX) or (key.endswith(".jsonl") and _SEGMENT_MARK in key)


def summary_of(key: str) -> str | None:
    """The key of the run summary written by the logger whose structured log or segment `key` is."""
    found = log_key(key)
    if found is None or found[2]:
        return None
    folder, stem, _ = found
    return f"{folder}/{stem}{SUMMARY_SUFFIX}" if folder else f"{stem}{SUMMARY_SUFFIX}"


def _event(line: bytes) -> Any:
    """One JSONL line as an object; None when it does not parse (orjson first, json for NaN and Infinity)."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            return json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None


def parse_points(data: bytes | memoryview) -> tuple[list[Point], int]:
    """The metric points of the complete lines of `data`, and how many bytes those lines take (a torn last line waits)."""
    data = bytes(data)
    end = data.rfind(b"\n") + 1
    points: list[Point] = []
    for line in data[:end].split(b"\n"):
        if b'"metrics"' in line:  # every event that carries metrics names them: skip the others unparsed
            points += metric_points(_event(line))
    return points, end


def read_source(store: Store, key: str, known: Known | None) -> Read | None:
    """Read `key` from where the last read stopped if it only grew since, else whole; None when it is gone."""
    try:
        if known is not None and known.read_bytes:
            tail = bytes.fromhex(known.tail)
            start = known.read_bytes - len(tail)
            data = store.read_range(key, start)
            if data[: len(tail)] == tail:
                points, used = parse_points(memoryview(data)[len(tail):])
                new_tail = data[max(0, len(tail) + used - TAIL): len(tail) + used]
                return Read(key, points, known.read_bytes + used, new_tail.hex(), replace=False)
        data = store.read(key)
    except KeyNotFound:
        return None
    points, used = parse_points(data)
    return Read(key, points, used, data[max(0, used - TAIL): used].hex(), replace=True)


def changed_sources(listed: Mapping[str, str], held: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """([keys of the sources listed with a version the catalog does not hold], [keys it holds that are gone]),
    from the listing and the catalog's {key: version} of the sources."""
    current = {k: v for k, v in listed.items() if is_source(k)}
    if current == held:
        return [], []
    return [k for k, v in current.items() if held.get(k) != v], [k for k in held if k not in current]
