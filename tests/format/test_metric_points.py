"""The one rule for the metric points of a logged event (the catalog's history and the dashboard use it)."""

from __future__ import annotations

import math

from expstore.format.metric_points import metric_points

STAMP = "2026-01-01T00:00:00+00:00"
SECONDS = 1767225600.0


def test_metrics_and_progress_events_give_their_points() -> None:
    metrics = {"timestamp": STAMP, "event_type": "metrics", "data": {"step": 3, "metrics": {"loss": 0.5, "ok": True}}}
    progress = {"timestamp": STAMP, "event_type": "progress", "data": {"iteration": 7, "total": 9, "metrics": {"loss": 2}}}
    assert metric_points(metrics) == [("loss", 3, SECONDS, 0.5), ("ok", 3, SECONDS, 1.0)]
    assert metric_points(progress) == [("loss", 7, SECONDS, 2.0)]


def test_values_that_are_not_finite_numbers_are_gaps_or_no_points() -> None:
    event = {"timestamp": STAMP, "event_type": "metrics",
             "data": {"step": 2 ** 64, "metrics": {"nan": math.nan, "inf": -math.inf, "huge": 10 ** 400, "text": "x", "list": [1]}}}
    assert metric_points(event) == [("nan", None, SECONDS, None), ("inf", None, SECONDS, None), ("huge", None, SECONDS, None)]


def test_events_without_metrics_or_a_readable_time_give_none() -> None:
    assert metric_points({"timestamp": STAMP, "event_type": "config", "data": {"metrics": {"a": 1}}}) == []
    assert metric_points({"timestamp": "yesterday", "event_type": "metrics", "data": {"metrics": {"a": 1}}}) == []
    assert metric_points({"timestamp": STAMP, "event_type": "metrics", "data": {"metrics": [1]}}) == []
    assert metric_points(["not", "an", "event"]) == []
