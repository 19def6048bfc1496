"""The two line forms of a logged event: one JSONL object and one human `.log` line.

Both are built in the logger's flusher thread, never in the training loop: the caller only queues
``(time, level, logger name, event type, data, message)`` and this module turns a batch of those
into text. JSON takes numpy scalars and arrays, datetimes, paths, sets and nan/inf (written as
Python's ``NaN`` / ``Infinity``, which `json.loads` reads back); anything else becomes its `repr`,
so encoding never fails.
"""

from __future__ import annotations

import datetime as _dt
import json
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"  # what the console handler prints

# A queued item: (unix time, level, logger name or None = the experiment's, event type or None =
# human line only, event data, message: str, callable(data) -> str, or None = no human line).
Item = tuple[float, int, str | None, str | None, Any, str | Callable[[Any], str] | None]


def _default(obj: Any) -> Any:
    """JSON stand-ins for values `json` does not know."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, _dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    return repr(obj)


_LEVEL_NAMES = {level: logging.getLevelName(level) for level in (10, 20, 30, 40, 50)}
# json's C encoder built once (json.dumps builds one per call): NaN/Infinity allowed, no cycle check
# (a cycle ends in RecursionError, and `to_json` then falls back to `_plain`).
if c_make_encoder is not None:
    _c_encode = c_make_encoder(None, _default, encode_basestring_ascii, None, ": ", ", ", False, False, True)

    def _encode(value: Any) -> str:
        return "".join(_c_encode(value, 0))

else:  # Pythons without the accelerator
    _encode = json.JSONEncoder(default=_default, check_circular=False).encode


def _plain(value: Any, depth: int = 0) -> Any:
    """A copy JSON can always encode: str keys, no cycles (deep nesting cut at 64 levels)."""
    if depth > 64:
        return repr(value)
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    try:
        _encode(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


def to_json(value: Any) -> str:
    """Encode `value` as one line of JSON; never raises."""
    try:
        return _encode(value)
    except (TypeError, ValueError, RecursionError):  # tuple keys, cycles, a __repr__ that fails...
        try:
            return _encode(_plain(value))
        except Exception as exc:  # noqa: BLE001 - a log line must never stop the flusher
            return _encode(f"<unencodable {type(value).__name__}: {exc}>")


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
    return ", ".join([
        f"{k}={v:.4f}" if type(v) is float and 1e-3 <= abs(v) < 1e6 else f"{k}={format_value(v)}"  # the common case inline
        for k, v in values.items()
    ])


class LineFormatter:
    """Turns queued items into JSONL and `.log` text; caches the per-second parts of timestamps."""

    def __init__(self, logger_name: str, rank: int | None = None):
        self.logger_name = logger_name
        self._rank = "" if rank is None else f' "rank": {rank},'  # in every JSONL object of a ranked logger
        self._second = -1
        self._iso_head = self._iso_zone = self._log_head = ""

    def _new_second(self, second: int) -> None:
        """Recompute the parts of both timestamps that change once a second."""
        local = time.localtime(second)
        offset = local.tm_gmtoff or 0
        sign = "-" if offset < 0 else "+"
        offset = abs(offset)
        self._second = second
        self._iso_head = time.strftime("%Y-%m-%dT%H:%M:%S", local)
        self._iso_zone = f"{sign}{offset // 3600:02d}:{offset % 3600 // 60:02d}"
        self._log_head = time.strftime(LOG_DATE_FORMAT, local)

    def format(self, item: Item) -> tuple[str | None, str | None]:
        """(JSONL line or None, `.log` line or None) of one item, each ending with a newline."""
        ts, levelno, name, event_type, data, message = item
        second = int(ts)
        if second != self._second:
            self._new_second(second)
        json_line = None
        if event_type is not None:
            micro = min(int((ts - second) * 1e6), 999_999)
            json_line = f'{{"timestamp": "{self._iso_head}.{micro:06d}{self._iso_zone}", "event_type": "{event_type}",{self._rank} "data": {to_json(data)}}}\n'
        if message is None:
            return json_line, None
        try:
            text = message if type(message) is str else message(data)  # type: ignore[operator]
        except Exception as exc:  # noqa: BLE001 - a bad value must not stop the flusher
            text = f"<message could not be formatted: {type(exc).__name__}: {exc}>"
        level = _LEVEL_NAMES.get(levelno) or logging.getLevelName(levelno)
        return json_line, f"{self._log_head} - {name or self.logger_name} - {level} - {text}\n"
