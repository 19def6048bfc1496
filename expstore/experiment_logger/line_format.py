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

from .json_lines import to_json_many

__all__ = ["LOG_DATE_FORMAT", "LOG_FORMAT", "Item", "LineFormatter", "format_pairs", "format_value"]

LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"  # what the console handler prints

# A queued item: (unix time, level, logger name or None = the experiment's, event type or None =
# human line only, event data, message: str, callable(data) -> str, or None = no human line).
Item = tuple[float, int, str | None, str | None, Any, str | Callable[[Any], str] | None]


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

    def format_many(self, items: list[Item]) -> tuple[list[str], list[str]]:
        """(JSONL lines, `.log` lines) of a batch of items, each line ending with a newline."""
        texts = iter(to_json_many([item[4] for item in items if item[3] is not None]))
        json_lines: list[str] = []
        log_lines: list[str] = []
        rank, logger_name = self._rank, self.logger_name
        for ts, levelno, name, event_type, data, message in items:
            second = int(ts)
            if second != self._second:
                self._new_second(second)
            if event_type is not None:
                micro = min(int((ts - second) * 1e6), 999_999)
                json_lines.append(
                    f'{{"timestamp": "{self._iso_head}.{micro:06d}{self._iso_zone}", "event_type": "{event_type}",{rank} "data": {next(texts)}}}\n'
                )
            if message is None:
                continue
            try:
                text = message if type(message) is str else message(data)  # type: ignore[operator]
            except Exception as exc:  # noqa: BLE001 - a bad value must not stop the flusher
                text = f"<message could not be formatted: {type(exc).__name__}: {exc}>"
            level = _LEVEL_NAMES.get(levelno) or logging.getLevelName(levelno)
            log_lines.append(f"{self._log_head} - {name or logger_name} - {level} - {text}\n")
        return json_lines, log_lines
