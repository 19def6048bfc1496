"""The two line forms of a logged event: one JSONL object and one human `.log` line.

Both are built in the logger's flusher thread, never in the training loop: the caller only queues
``(time, level, logger name, event type, data, message)`` and this module turns a batch of those
into text. JSON takes numpy scalars and arrays, datetimes, paths, sets and nan/inf (written as
Python's ``NaN`` / ``Infinity``, which `json.loads` reads back); anything else becomes its `repr`,
so encoding never fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .json_lines import encode_events

__all__ = ["LOG_DATE_FORMAT", "LOG_FORMAT", "Item", "LineFormatter", "format_pairs", "format_value", "human_text"]

LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"  # what the console handler prints

# A queued item: (unix time, level, logger name or None = the experiment's, event type or None =
# human line only, event data, message: a str, True = the event type's line built from the data
# (`human_text`), or None = no human line). A ``metrics`` event's data is queued as the tuple
# ``(step, metrics)``: a tuple of untracked values is one object the garbage collector never
# scans again, where a dict of a dict would be scanned at every collection while it waits.
Item = tuple[float, int, str | None, str | None, Any, str | bool | None]


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


def _metrics_message(data: tuple[Any, Any]) -> str:
    step, metrics = data
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

    def format_many(self, items: list[Item]) -> tuple[bytes, bytes]:
        """(JSONL, `.log` text) of a batch of items as UTF-8 bytes, each line ending with a newline; a
        ``metrics`` item's packed data is replaced in `items` by its event dict."""
        events: list[dict[str, Any]] = []
        log_lines: list[str] = []
        rank, logger_name = self.rank, self.logger_name
        base, iso_head, iso_zone, log_head = self._base, self._iso_head, self._iso_zone, self._log_head
        prefixes: dict[int, str] = {}  # the .log line up to the message, per level, for this second and logger
        for index, (ts, levelno, name, event_type, data, message) in enumerate(items):
            micro = int(ts * 1e6) - base
            if not 0 <= micro < 1_000_000:
                self._new_second(micro + base)
                micro -= self._base - base
                base, iso_head, iso_zone, log_head = self._base, self._iso_head, self._iso_zone, self._log_head
                prefixes = {}
            shown = data  # what the human line is built from
            if event_type is not None:
                if event_type == "metrics":
                    data = {"step": data[0], "metrics": data[1]}
                    items[index] = (ts, levelno, name, event_type, data, message)  # as the summary tracker reads it
                stamp = f"{iso_head}{micro:06d}{iso_zone}"
                if rank is None:
                    events.append({"timestamp": stamp, "event_type": event_type, "data": data})
                else:
                    events.append({"timestamp": stamp, "event_type": event_type, "rank": rank, "data": data})
            if message is None:
                continue
            text = message if type(message) is str else human_text(event_type, shown, message)
            prefix = prefixes.get(levelno) if name is None else None
            if prefix is None:
                level = _LEVEL_NAMES.get(levelno) or logging.getLevelName(levelno)
                prefix = f"{log_head}{name or logger_name} - {level} - "
                if name is None:
                    prefixes[levelno] = prefix
            log_lines.append(f"{prefix}{text}\n")
        self._base, self._iso_head, self._iso_zone, self._log_head = base, iso_head, iso_zone, log_head
        return encode_events(events), "".join(log_lines).encode("utf-8", "backslashreplace")
