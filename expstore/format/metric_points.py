"""The metric points a logged event carries: one rule for the catalog's history and the dashboard's charts.

"metrics" events carry ``data.step`` and ``data.metrics``, "progress" events ``data.iteration`` and
``data.metrics``. A point is ``(key, step, unix time, value)``: a NaN, an infinity or an int beyond a
float's range is a point whose value is None (a gap), a bool counts as 0/1, values that are not
numbers (text, lists) are no points; a step that is not a 64-bit int is None.
"""

from __future__ import annotations

from typing import Any

from .run_summary import iso_seconds

__all__ = ["Point", "metric_points"]

Point = tuple[str, "int | None", float, "float | None"]

_STEP_FIELD = {"metrics": "step", "progress": "iteration"}
_BIG = 2 ** 1023  # ints beyond a float's range are not numbers to chart
_BIG_STEP = 2 ** 63  # a step is stored as a 64-bit integer


def metric_points(event: Any) -> list[Point]:
    """The points of one parsed event ([] for events without metrics or without a readable timestamp)."""
    if not isinstance(event, dict):
        return []
    kind = event.get("event_type")
    field = _STEP_FIELD.get(kind) if isinstance(kind, str) else None
    body = event.get("data")
    if field is None or not isinstance(body, dict) or not isinstance(body.get("metrics"), dict):
        return []
    stamp = iso_seconds(event.get("timestamp"))
    if stamp is None:
        return []
    step = body.get(field)
    step = step if type(step) is int and -_BIG_STEP < step < _BIG_STEP else None
    points: list[Point] = []
    for key, raw in body["metrics"].items():
        number = type(raw)
        if number is float:
            points.append((key, step, stamp, raw if raw - raw == 0.0 else None))  # inf - inf and nan - nan are nan
        elif number is int or number is bool:
            points.append((key, step, stamp, float(raw) if -_BIG < raw < _BIG else None))
    return points
