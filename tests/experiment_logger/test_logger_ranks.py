"""ExperimentLogger(rank=r): one set of files per rank, readers merging ranks by timestamp, per-rank analysis."""

from __future__ import annotations

import json
import multiprocessing
import os
from datetime import datetime
from typing import Any

import pytest

from expstore import open_store
from expstore.experiment_logger import (
    ExperimentLogger,
    analyze_logs,
    create_experiment_logger,
    load_structured_logs,
    load_text_log,
)

from ..conftest import FACADE_BACKENDS
from ..workers.rank_workers import EVENTS, final_status, log_as_rank, loss

STORE_BACKENDS = FACADE_BACKENDS
RANKS = 4
FAST = {"flush_interval": 0.05, "log_to_console": False}


@pytest.fixture
def memory_url() -> str:
    return f"memory://ranks-{os.urandom(6).hex()}"


def seconds(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


@pytest.mark.parametrize("store_location", ["local", "s3-moto", "s3-seaweedfs"], indirect=True)
def test_four_rank_processes_are_merged_by_timestamp_and_analyzed_per_rank(store_location):
    url, options = store_location
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(RANKS)
    procs = [ctx.Process(target=log_as_rank, args=(url, options, "train", r, barrier)) for r in range(RANKS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * RANKS

    store = open_store(url, **options)
    try:
        keys = store.list("")
    finally:
        store.close()
    assert sorted(k for k in keys if k.endswith("_structured.jsonl")) == [f"train.rank{r}_structured.jsonl" for r in range(RANKS)]
    assert not [k for k in keys if ".segments/" in k]  # every rank merged its own segments

    events = load_structured_logs(url, "train", **options)
    assert len(events) == RANKS * (EVENTS + 3)  # start, metrics, result, end
    assert [seconds(e) for e in events] == sorted(seconds(e) for e in events)
    for r in range(RANKS):
        mine = [e for e in events if e["rank"] == r]
        assert [e["event_type"] for e in mine] == ["experiment_start"] + ["metrics"] * EVENTS + ["result", "experiment_end"]
        assert [e["data"]["step"] for e in mine if e["event_type"] == "metrics"] == list(range(EVENTS))
        assert all(e["data"]["metrics"]["rank"] == r for e in mine if e["event_type"] == "metrics")

    report = analyze_logs(url, "train", **options)
    assert report["total_events"] == len(events) and report["ranks"] == RANKS
    assert report["final_status"] == "failed"  # rank 3 failed
    assert sorted(report["per_rank"]) == list(range(RANKS))
    for r, part in report["per_rank"].items():
        assert part["total_events"] == EVENTS + 3
        assert part["final_status"] == final_status(r)
        assert part["final_metrics"] == {"loss": loss(r, EVENTS - 1), "rank": r}
        assert part["event_counts"]["metrics"] == EVENTS

    one = load_structured_logs(f"{url.rstrip('/')}/train.rank2_structured.jsonl", **options)
    assert len(one) == EVENTS + 3 and {e["rank"] for e in one} == {2}
    assert "per_rank" not in analyze_logs(one)


def test_each_rank_finalizes_only_its_own_files(store_location):
    url, options = store_location
    store = open_store(url, **options)
    try:
        ranks = [ExperimentLogger("job", store, rank=r, **FAST) for r in range(2)]
        for i in range(5):
            for lg in ranks:
                lg.log_metrics({"i": i}, step=i)
        for lg in ranks:
            lg.flush()
        ranks[0].finalize()
        keys = store.list("")
        assert "job.rank0_structured.jsonl" in keys and not [k for k in keys if k.startswith("job.rank0.segments/")]
        if not store.supports_append:  # rank 1 is still running: its segments are untouched, no final file yet
            assert "job.rank1_structured.jsonl" not in keys and [k for k in keys if k.startswith("job.rank1.segments/")]
        running = analyze_logs(store, "job")
        assert running["per_rank"][0]["final_status"] == "completed"
        assert running["per_rank"][1]["final_status"] is None
        assert running["final_status"] is None and running["total_events"] == 2 * 7 - 1
        ranks[1].finalize("completed")
        report = analyze_logs(store, "job")
        assert report["final_status"] == "completed" and report["total_events"] == 14
        text = load_text_log(store, "job")
        assert " - experiment.job.rank0 - INFO - Metrics (step 4): i=4" in text
        assert " - experiment.job.rank1 - INFO - Metrics (step 4): i=4" in text
    finally:
        store.close()


def test_without_a_rank_the_layout_and_lines_are_unchanged(memory_url):
    logger = create_experiment_logger("solo", memory_url, verbose=False)
    logger.log_metrics({"a": 1})
    logger.finalize()
    store = open_store(memory_url)
    raw = store.read("solo_structured.jsonl").decode()
    assert sorted(store.list("")) == ["solo.log", "solo_run.json", "solo_structured.jsonl"]
    assert all(list(json.loads(line)) == ["timestamp", "event_type", "data"] for line in raw.splitlines())
    assert "per_rank" not in analyze_logs(memory_url)


def test_rank_lines_and_urls(memory_url):
    logger = create_experiment_logger("r", memory_url, verbose=False, rank=7)
    assert logger.structured_log_file.endswith("/r.rank7_structured.jsonl") and logger.log_file.endswith("/r.rank7.log")
    assert repr(logger).endswith("rank=7)")
    logger.finalize()
    line = open_store(memory_url).read("r.rank7_structured.jsonl").decode().splitlines()[0]
    assert list(json.loads(line)) == ["timestamp", "event_type", "rank", "data"] and json.loads(line)["rank"] == 7
    assert [e["rank"] for e in load_structured_logs(memory_url)] == [7, 7]  # the folder's one experiment is "r"
    for bad in (-1, True, 1.5, "0"):
        with pytest.raises(ValueError, match="rank"):
            ExperimentLogger("r", memory_url, rank=bad)
