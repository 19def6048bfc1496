"""ExperimentLogger on every store: the logging API and formats, segments, readers, crashes, dead stores."""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

from expstore import Store, StoreError, open_store
from expstore.experiment_logger import (
    ExperimentLogger,
    analyze_logs,
    create_experiment_logger,
    load_structured_logs,
    load_text_log,
)

from ..conftest import FACADE_BACKENDS
from ..s3servers import ACCESS_KEY, SECRET_KEY, free_port
from ..workers import REPO_ROOT
from ..wrapping import DelegatingStore

STORE_BACKENDS = FACADE_BACKENDS
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d - experiment\.(\w+) - (DEBUG|INFO|WARNING|ERROR) - ")
FAST = {"flush_interval": 0.1}


def final_keys(name: str) -> list[str]:
    """The keys a finalized logger leaves: both logs and the run summary of the catalog."""
    return [f"{name}.log", f"{name}_run.json", f"{name}_structured.jsonl"]


def kinds(events: Iterable[dict[str, Any]]) -> list[str]:
    return [e["event_type"] for e in events]


class WrappedStore(DelegatingStore):
    """Counts writes and appends, and fails every call while `broken` is set."""

    def __init__(self, inner: Store):
        super().__init__(inner)
        self.writes = 0
        self.broken = False

    def forward(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        if self.broken:
            raise StoreError("injected failure", url=self.url)
        if operation in ("write", "append"):
            self.writes += 1
        return super().forward(operation, *args, **kwargs)


# ---- the documented example on every store ----------------------------------------------------------


def test_documented_example_writes_both_files(store_location):
    url, options = store_location
    logger = create_experiment_logger("seed", url, verbose=False, **options)
    logger.log_config({"learning_rate": 0.001, "batch_size": 32, "model": "resnet"})
    logger.log_progress(100, 1000, {"loss": 0.5})
    logger.log_metrics({"loss": np.float32(0.25), "acc": np.float64(0.9), "n": np.int64(3)}, step=5)
    logger.log_metrics({"weights": np.arange(3), "nan": float("nan"), "inf": float("inf"), "at": datetime.datetime(2025, 1, 2)})
    logger.log_result({"best_loss": 0.25})
    logger.log_checkpoint({"path": "ckpt/seed_iter_000100.ckpt", "iteration": 100})
    try:
        raise ValueError("diverged")
    except ValueError as exc:
        logger.log_error(exc, context={"step": 7})
    logger.info("plain %s", "message")
    logger.warning("careful")
    logger.debug("hidden at INFO")
    summary = logger.finalize()
    assert summary["final_status"] == "completed" and summary["events_lost"] == 0

    with open_store(url, **options) as store:
        assert store.list() == final_keys("seed")  # segments merged and removed
    events = load_structured_logs(logger.structured_log_file, **options)
    assert kinds(events) == [
        "experiment_start", "config", "progress", "metrics", "metrics", "result", "checkpoint", "error", "experiment_end",
    ]
    assert all(set(e) == {"timestamp", "event_type", "data"} for e in events)
    config = events[1]["data"]
    assert config["config"]["batch_size"] == 32
    assert {"python", "hostname", "argv", "packages", "git"} <= set(config["environment"])
    assert events[2]["data"] == {"iteration": 100, "total": 1000, "percent": 10.0, "metrics": {"loss": 0.5}}
    assert events[3]["data"] == {"step": 5, "metrics": {"loss": 0.25, "acc": 0.9, "n": 3}}
    odd = events[4]["data"]["metrics"]
    assert odd["weights"] == [0, 1, 2] and np.isnan(odd["nan"]) and odd["inf"] == float("inf") and odd["at"] == "2025-01-02T00:00:00"
    error = events[7]["data"]
    assert error["error_type"] == "ValueError" and error["message"] == "diverged" and error["context"] == {"step": 7}
    assert "Traceback" in error["traceback"] and "diverged" in error["traceback"]

    text = load_text_log(logger.log_file, **options)
    lines = [line for line in text.splitlines() if LINE.match(line)]
    assert all(LINE.match(line)[1] == "seed" for line in lines)
    assert any(line.endswith(" - INFO - Progress: 100/1000 (10.0%) | loss=0.5000") for line in lines)
    assert any(line.endswith(" - INFO - Metrics (step 5): loss=0.2500, acc=0.9000, n=3") for line in lines)
    assert any(line.endswith(" - INFO -   batch_size: 32") for line in lines)  # one line per config key
    assert any(" - ERROR - Error: ValueError: diverged | context: step=7" in line for line in lines)
    assert any(line.endswith(" - WARNING - careful") for line in lines)
    assert "hidden at INFO" not in text
    assert "Experiment completed after" in lines[-1]

    stats = analyze_logs(logger.structured_log_file, **options)
    assert stats["total_events"] == 9 and stats["final_status"] == "completed"
    assert stats["event_counts"]["metrics"] == 2 and stats["errors"] == 1
    assert stats["final_metrics"]["loss"] == 0.25 and stats["final_metrics"]["weights"] == [0, 1, 2]
    assert stats["duration_seconds"] >= 0


def test_context_manager_records_failure(store_location):
    url, options = store_location
    with pytest.raises(KeyError):
        with create_experiment_logger("boom", url, verbose=False, **options) as logger:
            logger.log_metrics({"loss": 1.0}, step=1)
            raise KeyError("missing")
    events = load_structured_logs(url, **options)
    assert kinds(events)[-2:] == ["error", "experiment_end"]
    assert events[-2]["data"]["error_type"] == "KeyError"
    assert analyze_logs(url, **options)["final_status"] == "failed"


def test_resumed_run_appends_and_a_running_run_is_readable(store_location):
    url, options = store_location
    with create_experiment_logger("resume", url, verbose=False, **options) as first:
        first.log_metrics({"loss": 2.0}, step=1)
    second = ExperimentLogger("resume", url, log_to_console=False, **FAST, **options)
    second.log_metrics({"loss": 1.0}, step=2)
    assert second.flush()
    running = load_structured_logs(url, **options)  # final file of run 1 + segments (or appends) of run 2
    assert kinds(running) == ["experiment_start", "metrics", "experiment_end", "experiment_start", "metrics"]
    assert analyze_logs(running)["final_status"] is None
    second.finalize("interrupted")
    stats = analyze_logs(url, "resume", **options)
    assert stats["sessions"] == 2 and stats["final_status"] == "interrupted"
    assert stats["event_counts"]["metrics"] == 2 and stats["final_metrics"] == {"loss": 1.0}
    assert load_text_log(url, **options).count("Experiment 'resume' started") == 2
    with open_store(url, **options) as store:
        assert store.list() == final_keys("resume")


# ---- flush policy, request counts, standard logging ----------------------------------------------


def test_an_event_reaches_storage_without_an_explicit_flush(tmp_path):
    logger = ExperimentLogger("timed", tmp_path, log_to_console=False, flush_interval=0.2)
    logger.log_metrics({"x": 1})
    deadline = time.monotonic() + 20  # generous: only content is asserted, never speed
    while not (tmp_path / "timed_structured.jsonl").exists() or b'"x"' not in (tmp_path / "timed_structured.jsonl").read_bytes():
        assert time.monotonic() < deadline, "the time trigger never wrote the event"
        time.sleep(0.05)
    logger.finalize()


def test_ten_thousand_events_cost_at_most_ten_puts_on_s3(moto_server):
    store = WrappedStore(open_store("s3://expstore-test/puts", **moto_server.storage_options))
    logger = ExperimentLogger("count", store, log_to_console=False)  # the default policy: 1 MiB or 2 s
    for i in range(10_000):
        logger.log_metrics({"loss": 1.0 / (i + 1), "accuracy": i / 10_000, "learning_rate": 1e-3}, step=i)
    summary = logger.finalize()
    assert summary["events_written"] == 10_002
    assert store.writes <= 10, store.writes
    assert len(load_structured_logs(store, "count")) == 10_002


def test_size_trigger_cuts_segments(memory_url):
    store = WrappedStore(open_store(memory_url))
    store.supports_append = False  # a memory store posing as an object store: segments
    logger = ExperimentLogger("sized", store, log_to_console=False, flush_interval=60, flush_bytes=4096)
    for i in range(2000):
        logger.log_metrics({"i": i}, step=i)
    assert logger.flush()
    segments = [k for k in store.list("sized.segments/") if k.endswith(".jsonl")]
    assert len(segments) >= 10 and all(store.size(k) < 4096 + 200 for k in segments)
    logger.finalize()
    assert [e["data"]["step"] for e in load_structured_logs(store, "sized")[1:-1]] == list(range(2000))


@pytest.fixture
def memory_url() -> str:
    return f"memory://logger-{os.urandom(6).hex()}"


def test_same_name_twice_in_one_process_does_not_duplicate_lines(memory_url, capsys):
    first = create_experiment_logger("twice", memory_url, verbose=True)
    second = create_experiment_logger("twice", memory_url, verbose=True)
    assert len(logging.getLogger("experiment.twice").handlers) == 2  # one console, one store handler
    second.info("only once")
    first.info("from the first")
    second.finalize()
    first.finalize()
    out = capsys.readouterr().out
    assert out.count("only once") == 1 and out.count("from the first") == 1
    assert load_text_log(memory_url, "twice").count("only once") == 1


def test_records_from_the_standard_logger_reach_the_log(memory_url):
    logger = create_experiment_logger("std", memory_url, verbose=False)
    logging.getLogger("experiment.std").warning("from library code: %d", 42)
    logger.finalize()
    assert " - experiment.std - WARNING - from library code: 42" in load_text_log(memory_url)


def test_bad_arguments_give_clear_errors_or_sensible_output(memory_url):
    logger = create_experiment_logger("bad", memory_url, verbose=False)
    logger.log_progress(5, 0)
    logger.log_progress(5, None, {"loss": 1})
    with pytest.raises(TypeError, match="metrics must be a dict"):
        logger.log_metrics(0.5)
    with pytest.raises(TypeError, match="config must be a dict"):
        logger.log_config(["lr"])
    logger.log_metrics({("tuple", "key"): object(), "self": logger})  # encodable only as strings: no crash
    logger.log_error("a plain message")
    with pytest.raises(ValueError, match="final_status"):
        logger.finalize(None)  # type: ignore[arg-type]
    logger.finalize()
    with pytest.warns(RuntimeWarning, match="finalized"):
        logger.log_metrics({"late": 1})
    events = load_structured_logs(memory_url)
    assert [e["data"]["percent"] for e in events if e["event_type"] == "progress"] == [None, None]
    assert "('tuple', 'key')" in events[3]["data"]["metrics"]
    assert "Progress: 5/0 (n/a)" in load_text_log(memory_url)
    with pytest.raises(ValueError, match="experiment name"):
        ExperimentLogger("../escape", memory_url)


def test_truncated_last_line_is_skipped_with_a_warning_and_the_next_run_starts_a_new_line(tmp_path):
    with create_experiment_logger("torn", tmp_path, verbose=False) as logger:
        logger.log_metrics({"loss": 1.0}, step=1)
    path = tmp_path / "torn_structured.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"timestamp": "2025-01-01T00:00:00", "event_type": "metr')  # the process died mid-write
    with pytest.warns(RuntimeWarning, match="truncated last line"):
        assert len(load_structured_logs(path)) == 3
    with create_experiment_logger("torn", tmp_path, verbose=False) as logger:
        logger.log_metrics({"loss": 0.5}, step=2)
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        stats = analyze_logs(path)
    assert stats["total_events"] == 6 and stats["final_metrics"] == {"loss": 0.5}


# ---- failing stores --------------------------------------------------------------------------------


def test_dead_s3_endpoint_never_raises_and_finalize_reports_the_loss():
    options = {
        "endpoint_url": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1},
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = ExperimentLogger(
            "dead", "s3://expstore-test/dead", log_to_console=False,
            flush_interval=0.05, flush_bytes=4096, max_buffer_bytes=16384, **options,
        )
        for i in range(3000):
            logger.log_metrics({"loss": 1.0 / (i + 1)}, step=i)
        logger.flush()
        assert logger.sink._unsent_bytes <= 16384  # the memory bound holds while the store is down
        summary = logger.finalize()
    assert summary["events_written"] == 0 and summary["events_lost"] == 3002
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert sum("failed" in m and "retrying" in m for m in messages) == 1  # warned once
    assert any("3002 events" in m and "never reached" in m for m in messages)


def test_store_that_recovers_loses_nothing(memory_url):
    store = WrappedStore(open_store(memory_url))
    store.supports_append = False
    with pytest.warns(RuntimeWarning, match="injected failure"):
        logger = ExperimentLogger("flaky", store, log_to_console=False, flush_interval=0.05)
        logger.log_metrics({"i": 0}, step=0)
        assert logger.flush()
        store.broken = True
        for i in range(1, 500):
            logger.log_metrics({"i": i}, step=i)
        logger.flush()
        assert logger.sink.stats["write_errors"] >= 1
        store.broken = False
        summary = logger.finalize()
    assert summary["events_lost"] == 0 and summary["write_errors"] >= 1
    assert [e["data"]["step"] for e in load_structured_logs(store, "flaky")[1:-1]] == list(range(500))


# ---- processes: SIGKILL, SIGTERM, exit without finalize --------------------------------------------


def spawn(
    mode: str, url: str, name: str, interval: float, options: dict[str, Any] | None = None, heartbeat: float | None = None
) -> subprocess.Popen:
    env = dict(os.environ, LOGGER_WORKER_OPTIONS=json.dumps(options or {}))
    if heartbeat is not None:
        env["LOGGER_WORKER_HEARTBEAT"] = str(heartbeat)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.workers.logger_workers", mode, url, name, str(interval)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def logged_before_pause(proc: subprocess.Popen, at_least: int, pause: float) -> int:
    """The highest id the child reported logged once it passed `at_least`; then let it run `pause` s more."""
    while True:
        line = proc.stdout.readline()
        assert line, "the worker died"
        if int(line) >= at_least:
            time.sleep(pause)
            return int(line)


def metric_ids(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["step"] for e in events if e["event_type"] == "metrics"]


@pytest.mark.parametrize("where", ["local", "s3-moto"])
def test_sigkill_loses_at_most_the_last_flush_interval(where, tmp_path, request):
    interval = 0.25
    if where == "local":
        url, options = str(tmp_path / "logs"), {}
    else:
        url, options = "s3://expstore-test/kill-" + os.urandom(4).hex(), request.getfixturevalue("moto_server").storage_options
    proc = spawn("kill", url, "killed", interval, options)
    try:
        safe = logged_before_pause(proc, 200, pause=6 * interval)  # logged > 2 intervals before the kill
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a torn last line is allowed after SIGKILL
        events = load_structured_logs(url, "killed", **options)
    ids = metric_ids(events)
    assert ids == list(range(len(ids))), "events are missing in the middle or duplicated"
    assert len(ids) > safe, f"logged {safe} more than 6 flush intervals before the kill, only {len(ids)} stored"
    assert analyze_logs(events)["final_status"] is None  # it never finalized


def test_sigterm_flushes_and_finalizes_as_interrupted(tmp_path):
    proc = spawn("sigterm", str(tmp_path), "term", 30.0)  # no time trigger: only the exit path writes
    try:
        safe = logged_before_pause(proc, 50, pause=0)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    events = load_structured_logs(tmp_path, "term")
    assert len(metric_ids(events)) > safe and metric_ids(events) == list(range(len(metric_ids(events))))
    assert analyze_logs(events)["final_status"] == "interrupted"


def test_exit_without_finalize_flushes_at_exit(moto_server):
    url = "s3://expstore-test/exit-" + os.urandom(4).hex()
    proc = spawn("exit", url, "leaver", 60.0, moto_server.storage_options)
    assert proc.stdout.read().split() == ["done"] and proc.wait(timeout=30) == 0
    events = load_structured_logs(url, "leaver", **moto_server.storage_options)
    assert metric_ids(events) == list(range(500))


# ---- review fixes ------------------------------------------------------------------------------------


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


def test_bad_format_arguments_and_broken_str_never_raise_in_the_training_loop(memory_url):
    logger = create_experiment_logger("fmt", memory_url, verbose=True)
    logger.info("loss %d", "not a number")  # logging itself would print an error and go on
    logger.warning("50% done after %s", "x")  # a stray '%' in the message
    logger.error("two %s %s", "args")
    logger.info("by name %(step)d", {"step": 7})  # logging's one-mapping form
    logger.info(_BadStr())
    logger.log_error(_BadStr())
    logger.finalize()
    text = load_text_log(memory_url, "fmt")
    assert "loss %d" in text and "could not be formatted" in text and "not a number" in text
    assert "by name 7" in text and "whose str() failed" in text
    assert kinds(load_structured_logs(memory_url, "fmt")) == ["experiment_start", "error", "experiment_end"]


def test_values_changed_in_place_are_logged_as_they_were_at_the_call(store_location):
    url, options = store_location
    logger = ExperimentLogger("inplace", url, log_to_console=False, flush_interval=60, **options)
    confusion, history, nested = np.zeros(3), [1], {"a": [1]}
    logger.log_metrics({"confusion": confusion, "history": history}, step=1)
    logger.log_progress(1, 10, {"confusion": confusion})
    logger.log_result({"nested": nested})
    confusion += 5
    history.append(2)
    nested["a"].append(2)
    logger.finalize()  # the flusher encodes the events only now
    events = load_structured_logs(url, "inplace", **options)
    assert events[1]["data"]["metrics"] == {"confusion": [0.0, 0.0, 0.0], "history": [1]}
    assert events[2]["data"]["metrics"] == {"confusion": [0.0, 0.0, 0.0]}
    assert events[3]["data"] == {"nested": {"a": [1]}}


def test_a_logger_dropped_without_finalize_writes_its_events_and_stops_its_thread(memory_url):
    import gc
    import threading

    def trial() -> None:
        logger = ExperimentLogger("dropped", memory_url, log_to_console=False, flush_interval=60)
        for i in range(100):
            logger.log_metrics({"i": i}, step=i)

    trial()
    gc.collect()
    deadline = time.monotonic() + 20  # generous: only the outcome is asserted, never speed
    while any(t.name == "expstore-log-dropped" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the flusher of a dropped logger never stopped"
        time.sleep(0.02)
    assert metric_ids(load_structured_logs(memory_url, "dropped")) == list(range(100))
    assert logging.getLogger("experiment.dropped").handlers == []  # no handler left writing into a dead queue
