"""Bad logger arguments get a `TypeError` / `ValueError` naming the argument, before anything changes."""

from __future__ import annotations

import logging
import os

import pytest

from expstore.experiment_logger import ExperimentLogger, analyze_logs


@pytest.fixture
def memory_url() -> str:
    return f"memory://arguments-{os.urandom(6).hex()}"


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"flush_interval": "2"}, TypeError, r"flush_interval must be a number of seconds > 0 .*got str '2'"),
        ({"flush_interval": None}, TypeError, r"flush_interval must be a number of seconds .*got NoneType None"),
        ({"flush_interval": True}, TypeError, r"flush_interval .*got bool True"),
        ({"flush_interval": 0}, ValueError, r"flush_interval must be a number of seconds > 0 .*got 0"),
        ({"flush_interval": float("nan")}, ValueError, r"flush_interval .*got nan"),
        ({"flush_bytes": "1"}, TypeError, r"flush_bytes must be an int \(bytes\), got str '1'"),
        ({"flush_bytes": 0}, ValueError, r"flush_bytes must be an int >= 1, got 0"),
        ({"max_buffer_bytes": 1.5}, TypeError, r"max_buffer_bytes must be an int \(bytes\), got float 1.5"),
        ({"flush_bytes": 4096, "max_buffer_bytes": 100}, ValueError, r"max_buffer_bytes must be an int >= flush_bytes \(4096\), got 100"),
    ],
)
def test_flush_policy_errors_name_the_argument(memory_url, options, error, message):
    earlier = ExperimentLogger("args", memory_url, log_to_console=False)
    with pytest.raises(error, match=message):
        ExperimentLogger("args", memory_url, log_to_console=False, **options)
    # the failed constructor left the earlier logger of this name its handlers
    assert any(getattr(h, "sink", None) is earlier.sink for h in logging.getLogger("experiment.args").handlers)
    earlier.finalize()


@pytest.mark.parametrize("events", [[1, 2], [{"event_type": "metrics"}, "line"]])
def test_analyze_logs_of_a_list_that_is_not_events_names_the_item(events):
    bad = next(i for i, e in enumerate(events) if not isinstance(e, dict))
    with pytest.raises(TypeError, match=rf"list of event dicts .*item {bad} of the list is {type(events[bad]).__name__}"):
        analyze_logs(events)
