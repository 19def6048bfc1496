"""The two line forms of a logged event: one JSONL object and one human `.log` line.

Both are built in the logger's flusher thread, never in the training loop: the caller only queues
``(time, level, logger name, event type, data, message)`` and this module turns a batch of those
into UTF-8 bytes, one blob per kind and batch. The JSON is compact (`json_lines`: numpy values,
datetimes, paths, sets, nan/inf as Python's ``NaN`` / ``Infinity``, anything else its `repr`, so
encoding never fails); the `.log` lines keep the seed's text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

import numpy as np

from .json_lines import encode_events

__all__ = ["LOG_DATE_FORMAT", "LOG_FORMAT", "Item", "LineFormatter", "format_pairs", "format_value", "human_text", "metrics_texts"]

LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"  # what the console handler prints

# A queued item: (unix time, level, logger name or None = the experiment's, event type or None =
# human line only, event data, message: a str, True = the event type's line built from the data
# (`human_text`), or None = no human line). A ``metrics`` event's data is queued as the tuple
# ``(names, step, *values)`` (the metrics dict's keys as one tuple, then its values): a tuple of
# numbers and strings is dropped from the garbage collector's lists at its first pass, while a
# tuple holding a dict would be scanned at every full collection for as long as it waits queued.
Item = tuple[float, int, str | None, str | None, Any, str | bool | None]


_INFO = logging.INFO
_FLOAT = frozenset({float})
_LEVEL_NAMES = {level: logging.getLevelName(level) for level in (10, 20, 30, 40, 50)}


def format_value(value: Any) -> str:
    """A metric value for a human line: floats with 4 decimals (scientific when tiny or huge)."""
    if type(value) is float or isinstance(value, np.floating):
        v = float(value)
        return "%.4f" % v if v == 0 or 1e-3 <= abs(v) < 1e6 else "%.4e" % v
    return str(value)


def format_pairs(values: Any) -> str:
    """``a=1.0000, b=2`` for a mapping (anything else as `str`)."""
    if type(values) is not dict and not isinstance(values, Mapping):
        return str(values)
    return ", ".join([  # floats inline (the common case), other values through `format_value`
        (f"{k}={v:.4f}" if 1e-3 <= abs(v) < 1e6 or v == 0 else f"{k}={v:.4e}") if type(v) is float else f"{k}={format_value(v)}"
        for k, v in values.items()
    ])


def _metrics_message(data: tuple[Any, ...]) -> str:
    step = data[1]
    metrics = dict(zip(data[0], data[2:]))
    if step is None:
        return f"Metrics: {format_pairs(metrics)}"
    return f"Metrics (step {step}): {format_pairs(metrics)}"


def _progress_message(data: dict[str, Any]) -> str:
    percent = data.get("percent")
    text = f"Progress: {data['iteration']}/{data['total']} ({'n/a' if percent is None else f'{percent:.1f}%'})"
    return f"{text} | {format_pairs(data['metrics'])}" if data.get("metrics") else text


def _error_message(data: dict[str, Any]) -> str:
    text = f"Error: {data['error_type']}: {data['message']}"
    if data.get("context"):
        text += f" | context: {format_pairs(data['context'])}"
    return f"{text}\n{data['traceback'].rstrip()}" if data.get("traceback") else text


_MESSAGES: dict[str | None, Callable[[Any], str]] = {
    "metrics": _metrics_message,
    "progress": _progress_message,
    "result": lambda data: f"Result: {format_pairs(data)}",
    "checkpoint": lambda data: f"Checkpoint: {format_pairs(data)}",
    "error": _error_message,
    "experiment_end": lambda data: f"Experiment {data['final_status']} after {data['duration_seconds']:.2f} s",
}


def human_text(event_type: str | None, data: Any, message: str | bool) -> str:
    """The human message of an item (`message` itself, or the line its event type builds from `data`); never raises."""
    try:
        return message if type(message) is str else _MESSAGES[event_type](data)
    except Exception as exc:  # noqa: BLE001 - a value whose str() fails must not stop training or the flusher
        return f"<message could not be formatted: {type(exc).__name__}: {exc}>"


# Event dicts go to orjson this many at a time: they are freed before the garbage collector's young
# generation fills, instead of surviving into the older generations that full collections walk.
_ENCODE_EVERY = 256
_VECTOR_MIN = 8  # metrics events with the same names from which one numpy pass picks the formats
_MAX_NAMES = 62  # names per event whose fixed/scientific choices fit in one int64


def metrics_texts(packed: list[tuple[Any, ...]]) -> list[str]:
    """The human messages of many ``(names, step, *values)`` data, as `human_text` writes them.

    Events whose metrics are plain floats under the same str names are formatted together: numpy
    picks ``%.4f`` or ``%.4e`` for every value at once and each line is one %-template (one per
    choice pattern) applied to the event's values; anything else goes through `human_text`."""
    texts: list[str | None] = [None] * len(packed)
    all_names = [data[0] for data in packed]
    if all_names and all_names.count(all_names[0]) == len(all_names):  # one loop's events: one group
        groups = {all_names[0]: range(len(packed))}
    else:
        groups = {}
        for i, names in enumerate(all_names):
            groups.setdefault(names, []).append(i)  # type: ignore[attr-defined]
    for names, where in groups.items():
        if len(where) >= _VECTOR_MIN and 0 < len(names) <= _MAX_NAMES and all([type(k) is str for k in names]):
            _vector_texts(names, where, packed, texts)
    if None not in texts:
        return texts  # type: ignore[return-value]
    return [human_text("metrics", data, True) if text is None else text for data, text in zip(packed, texts)]


def _vector_texts(names: tuple[str, ...], where: Sequence[int], packed: list[Any], texts: list[str | None]) -> None:
    """Fill `texts` at the indices `where` (events with these metric names) when all their values are floats."""
    chosen = packed if len(where) == len(packed) else [packed[i] for i in where]
    rows = [data[2:] for data in chosen]
    if not _FLOAT.issuperset(map(type, chain.from_iterable(rows))):
        return
    values = np.fromiter(chain.from_iterable(rows), float, len(rows) * len(names)).reshape(len(rows), len(names))
    size = np.abs(values)
    fixed = ((size >= 1e-3) & (size < 1e6)) | (values == 0)  # format_value's choice, for all values at once
    codes = (fixed.astype(np.int64) << np.arange(len(names), dtype=np.int64)).sum(axis=1).tolist()
    # Per choice pattern: the message of an int step and of no step, applied to the data tuple
    # from the step on (``%.0s`` consumes a missing step), and the pairs alone.
    templates: dict[int, tuple[str, str, str]] = {}
    for i, code, data in zip(where, codes, chosen):
        found = templates.get(code)
        if found is None:
            pairs = ", ".join([k.replace("%", "%%") + ("=%.4f" if code >> bit & 1 else "=%.4e") for bit, k in enumerate(names)])
            found = templates[code] = ("Metrics (step %d): " + pairs, "Metrics: %.0s" + pairs, pairs)
        step = data[1]
        if type(step) is int:
            texts[i] = found[0] % data[1:]
        elif step is None:
            texts[i] = found[1] % data[1:]
        else:
            texts[i] = f"Metrics (step {step}): {found[2] % data[2:]}"


class LineFormatter:
    """Turns queued items into JSONL and `.log` bytes; caches the per-second parts of timestamps."""

    def __init__(self, logger_name: str, rank: int | None = None):
        self.logger_name = logger_name
        self.rank = rank  # in every JSONL object of a ranked logger
        self._base = -(10**18)  # the cached second, in microseconds since the epoch
        self._iso_head = self._iso_zone = self._log_head = ""

    def _new_second(self, micros: int) -> None:
        """Recompute the parts of both timestamps that change once a second (`micros` lies in the new second)."""
        second = micros // 1_000_000
        local = time.localtime(second)
        offset = local.tm_gmtoff or 0
        sign = "-" if offset < 0 else "+"
        offset = abs(offset)
        self._base = second * 1_000_000
        self._iso_head = time.strftime("%Y-%m-%dT%H:%M:%S.", local)
        self._iso_zone = f"{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"
        self._log_head = time.strftime(LOG_DATE_FORMAT, local) + " - "

    def format_many(self, items: list[Item]) -> tuple[bytes, bytes, list[Item]]:
        """(JSONL, `.log` text, what the run summary needs) of a batch of items: the text as UTF-8 bytes,
        each line ending with a newline; the summary gets the items with an event type, each run of
        ``metrics`` events as one event holding their metrics merged in order (the last value of each name)."""
        if items and items[0][3] == "metrics":
            done = self._one_loop(items)
            if done is not None:
                return done
        jsonl: list[bytes] = []
        events: list[dict[str, Any]] = []
        log_lines: list[str] = []
        seen: list[Item] = []
        merged: dict[Any, Any] = {}
        rank, logger_name = self.rank, self.logger_name
        base, iso_head, iso_zone, log_head = self._base, self._iso_head, self._iso_zone, self._log_head
        prefixes: dict[int, str] = {}  # the .log line up to the message, per level, for this second and logger
        next_metrics_text = iter(metrics_texts([item[4] for item in items if item[3] == "metrics" and item[5] is True])).__next__
        for item in items:
            ts, levelno, name, event_type, data, message = item
            micro = int(ts * 1e6) - base
            if not 0 <= micro < 1_000_000:
                self._new_second(micro + base)
                micro -= self._base - base
                base, iso_head, iso_zone, log_head = self._base, self._iso_head, self._iso_zone, self._log_head
                prefixes = {}
            if event_type is not None:
                stamp = f"{iso_head}{micro:06d}{iso_zone}"
                if event_type == "metrics":
                    metrics = dict(zip(data[0], data[2:]))
                    merged.update(metrics)
                    data = {"step": data[1], "metrics": metrics}
                else:
                    if merged:
                        seen.append((ts, _INFO, None, "metrics", {"step": None, "metrics": merged}, None))
                        merged = {}
                    seen.append(item)
                if rank is None:
                    events.append({"timestamp": stamp, "event_type": event_type, "data": data})
                else:
                    events.append({"timestamp": stamp, "event_type": event_type, "rank": rank, "data": data})
                if len(events) == _ENCODE_EVERY:
                    jsonl.append(encode_events(events))
                    events = []
            if message is None:
                continue
            if type(message) is str:
                text = message
            elif event_type == "metrics":
                text = next_metrics_text()
            else:
                text = human_text(event_type, data, message)
            prefix = prefixes.get(levelno) if name is None else None
            if prefix is None:
                level = _LEVEL_NAMES.get(levelno) or logging.getLevelName(levelno)
                prefix = f"{log_head}{name or logger_name} - {level} - "
                if name is None:
                    prefixes[levelno] = prefix
            log_lines.append(f"{prefix}{text}\n")
        if merged:
            seen.append((items[-1][0], _INFO, None, "metrics", {"step": None, "metrics": merged}, None))
        self._base, self._iso_head, self._iso_zone, self._log_head = base, iso_head, iso_zone, log_head
        jsonl.append(encode_events(events))
        return b"".join(jsonl), "".join(log_lines).encode("utf-8", "backslashreplace"), seen

    def _one_loop(self, items: list[Item]) -> tuple[bytes, bytes, list[Item]] | None:
        """`format_many` of a batch of INFO ``log_metrics`` events with the same names within one second
        (a training loop's), in list comprehensions and joins; None for any other batch."""
        names = items[0][4][0]
        count = len(items)
        if [item[1:4] for item in items].count((_INFO, None, "metrics")) != count or [item[5] for item in items].count(True) != count:
            return None
        datas = [item[4] for item in items]
        if [data[0] for data in datas].count(names) != count:
            return None
        micros = [int(item[0] * 1e6) - self._base for item in items]
        if not 0 <= min(micros) <= max(micros) < 1_000_000:
            self._new_second(int(items[0][0] * 1e6))
            micros = [int(item[0] * 1e6) - self._base for item in items]
            if not 0 <= min(micros) <= max(micros) < 1_000_000:
                return None
        head, zone, rank = self._iso_head, self._iso_zone, self.rank
        stamps = [f"{head}{micro:06d}{zone}" for micro in micros]
        jsonl = []
        for start in range(0, count, _ENCODE_EVERY):
            chunk = zip(stamps[start : start + _ENCODE_EVERY], datas[start : start + _ENCODE_EVERY])
            if rank is None:
                events = [{"timestamp": t, "event_type": "metrics", "data": {"step": d[1], "metrics": dict(zip(names, d[2:]))}} for t, d in chunk]
            else:
                events = [{"timestamp": t, "event_type": "metrics", "rank": rank,
                           "data": {"step": d[1], "metrics": dict(zip(names, d[2:]))}} for t, d in chunk]
            jsonl.append(encode_events(events))
        prefix = f"{self._log_head}{self.logger_name} - {_LEVEL_NAMES[_INFO]} - "
        log = prefix + f"\n{prefix}".join(metrics_texts(datas)) + "\n"
        seen: list[Item] = [(items[-1][0], _INFO, None, "metrics", {"step": None, "metrics": dict(zip(names, datas[-1][2:]))}, None)]
        return b"".join(jsonl), log.encode("utf-8", "backslashreplace"), seen
