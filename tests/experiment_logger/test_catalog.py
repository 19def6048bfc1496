"""The run catalog: `list_runs(url)` and `expstore ls` list runs from small per-run summaries, in O(runs) requests."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from expstore import Store, open_store
from expstore.checkpointing import CheckpointManager
from expstore.experiment_logger import ExperimentLogger
from expstore.experiment_logger import summaries as log_catalog
from expstore.runs import list_runs, save_run

from ..cli.test_cli import cli
from ..conftest import unique
from ..s3servers import S3Server
from ..wrapping import DelegatingStore
from .test_experiment_logger import spawn

RUNS = 200
REAL = 7  # runs written by real loggers; the others are byte copies of them under new names
QUIET = {"log_to_console": False}


class CountingStore(DelegatingStore):
    """Counts each call it forwards (one request each; a LIST may be several pages)."""

    def __init__(self, inner: Store):
        super().__init__(inner)
        self.calls: dict[str, int] = {}

    def forward(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[operation] = self.calls.get(operation, 0) + 1
        return super().forward(operation, *args, **kwargs)


def status_of(i: int) -> str:
    return "failed" if i % 7 == 3 else "completed"


def write_real_run(root: str, options: dict[str, Any], i: int) -> None:
    """`run<i>`: a logger in `run<i>/logs` (50 metrics, then `status_of(i)`), two checkpoints in `run<i>/checkpoints`."""
    name = f"run{i:03d}"
    with ExperimentLogger(name, f"{root}/{name}/logs", **QUIET, **options) as logger:
        for step in range(50):
            logger.log_metrics({"loss": i + 1.0 / (step + 1)}, step=step)
        logger.finalize(status_of(i))
    manager = CheckpointManager(f"{root}/{name}/checkpoints", name, keep_last_n=2, **options)
    for it in (10, 20):
        manager.save_checkpoint({"w": np.full(4, it, np.float32)}, it)


def make_runs(root: str, options: dict[str, Any]) -> None:
    """`RUNS` runs under `root`: `REAL` written by loggers, the rest copies of them renamed (same bytes)."""
    for i in range(REAL):
        write_real_run(root, options, i)
    with open_store(root, **options) as store:
        sources = {key: store.read(key) for key in store.list("")}
        copies = [(key.replace(f"run{i % REAL:03d}", f"run{i:03d}"), data)
                  for i in range(REAL, RUNS) for key, data in sources.items() if key.startswith(f"run{i % REAL:03d}/")]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda copy: store.write(*copy), copies))


def moto_api(server: S3Server, action: str) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(f"{server.endpoint_url}/moto-api/recorder/{action}", method="POST")) as r:
        return r.read()


def test_two_hundred_runs_cost_one_list_and_one_get_per_run(moto_server: S3Server, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root, options = f"s3://expstore-test/catalog-{unique()}", moto_server.storage_options
    make_runs(root, options)

    store = CountingStore(open_store(root, **options))
    runs = list_runs(store)
    assert store.calls == {"list": 1, "read": RUNS}  # one LIST (paged), one GET per summary, nothing else
    assert [r["name"] for r in runs] == [f"run{i:03d}" for i in range(RUNS)]
    for i, run in enumerate(runs):
        source = i % REAL
        assert run["kind"] == "logged" and run["summary"] is True and run["ranks"] == 1
        assert run["status"] == status_of(source) and run["final_metrics"] == {"loss": source + 1.0 / 50}
        assert run["url"] == f"{root}/run{i:03d}" and run["logs_url"] == f"{root}/run{i:03d}/logs"
    keys = len(store.inner.list(""))

    # the CLI against the same root, its requests counted by the server (moto's recorder writes to the cwd)
    monkeypatch.chdir(tmp_path)
    moto_api(moto_server, "reset-recording")
    moto_api(moto_server, "start-recording")
    try:
        listing = json.loads(cli("ls", root, "--json", cwd=tmp_path, options=("--endpoint-url", moto_server.endpoint_url)).stdout)
    finally:
        moto_api(moto_server, "stop-recording")
    requests = [json.loads(line) for line in (tmp_path / "moto_recording").read_text().splitlines()]
    lists = [r for r in requests if "list-type=2" in r["url"]]
    gets = [r for r in requests if r["method"] == "GET" and "list-type=2" not in r["url"]]
    assert len(lists) == -(-keys // 1000) and len(gets) == RUNS  # LIST pages of 1000 keys, one GET per run
    assert len(requests) <= len(lists) + len(gets) + 2, [(r["method"], r["url"]) for r in requests][:20]
    assert len(listing["runs"]) == RUNS
    assert [(r["name"], r["status"], r["checkpoints"]) for r in listing["runs"][:2]] == [
        ("run000", "completed", ["run000"]), ("run001", "completed", ["run001"])]


def test_runs_without_a_summary_still_appear_next_to_section_runs_and_ranks(tmp_path: Path) -> None:
    root = str(tmp_path / "root")
    with ExperimentLogger("new", f"{root}/new/logs", **QUIET) as logger:
        logger.log_metrics({"acc": 0.5})
    with ExperimentLogger("old", f"{root}/old/logs", **QUIET) as logger:
        logger.log_metrics({"acc": 0.25})
    (tmp_path / "root/old/logs/old_run.json").unlink()  # written by a logger that predates the catalog
    CheckpointManager(f"{root}/ckpt-only/checkpoints", "ckpt-only").save_checkpoint({"w": np.ones(2)}, 1)
    ranks = [ExperimentLogger("dp", f"{root}/dp/logs", rank=r, **QUIET) for r in range(2)]
    for r, logger in enumerate(ranks):
        logger.log_metrics({"loss": float(r)})
    ranks[1].finalize("completed")
    ranks[0].flush()  # rank 0 still running: its start summary says so
    timestamp = save_run({"adam": pd.DataFrame({"loss": [1.0, 0.5]})}, "section1", root, device="cpu")

    runs = list_runs(root)
    assert runs[0] == {"section": "section1", "timestamp": timestamp, "epochs": None, "model_types": ["adam"], "legacy": False}
    logged = {r["name"]: r for r in runs[1:]}
    assert sorted(logged) == ["dp", "new", "old"] and all(r["kind"] == "logged" for r in runs[1:])
    assert logged["new"]["summary"] is True and logged["new"]["status"] == "completed"
    assert logged["new"]["final_metrics"] == {"acc": 0.5}
    assert logged["old"]["summary"] is False and logged["old"]["status"] is None and logged["old"]["url"] == f"{root}/old"
    assert logged["dp"]["ranks"] == 2 and logged["dp"]["status"] == "running"
    assert logged["dp"]["final_metrics"] == {"loss": 0.0}  # the lowest rank's
    assert list_runs(root, kind="section") == runs[:1] and list_runs(root, kind="logged") == runs[1:]
    with pytest.raises(ValueError, match="kind"):
        list_runs(root, kind="nope")
    ranks[0].finalize("failed")
    assert {r["name"]: r["status"] for r in list_runs(root, kind="logged")}["dp"] == "failed"

    listing = json.loads(cli("ls", "root", "--json", cwd=tmp_path).stdout)
    assert {r["name"]: (r["status"], r["summary"]) for r in listing["runs"]} == {
        "ckpt-only": (None, None), "dp": ("failed", True), "new": ("completed", True), "old": (None, False)}
    text = cli("ls", "root", cwd=tmp_path).stdout
    assert "no summary" in text and "failed" in text and "expstore ls --long root" in text
    detailed = json.loads(cli("ls", "root", "--long", "--json", cwd=tmp_path).stdout)
    assert {r["name"] for r in detailed["runs"]} == {"ckpt-only", "dp", "new", "old"}
    assert all("checkpoints" in r and "logs" in r for r in detailed["runs"])


# ---- heartbeat: a run whose process died is not "running" forever -------------------------------


def summary(status: str, beat_age: float | None, every: float = 60.0) -> bytes:
    doc: dict[str, Any] = {"format": "expstore-run-summary/1", "experiment_name": "x", "rank": None, "status": status,
                           "start_time": "2026-01-01T00:00:00+00:00", "end_time": None, "duration_seconds": None,
                           "final_metrics": {}}
    if beat_age is not None:
        doc.update(heartbeat_time=datetime.fromtimestamp(time.time() - beat_age).astimezone().isoformat(),
                   heartbeat_seconds=every)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("beats", "expected"),
    [
        ({"fresh": [("running", 30.0)]}, "running"),
        ({"old": [("running", 600.0)]}, "stale"),  # 10 beats of 60 s missed
        ({"no-beat": [("running", None)]}, "running"),  # a summary from a logger without heartbeats
        ({"done": [("completed", 6000.0)]}, "completed"),  # a finished run never goes stale
        ({"ranks": [("running", 10.0), ("running", 900.0)]}, "running"),  # one rank still beats
        ({"ranks": [("completed", 900.0), ("running", 900.0)]}, "stale"),
    ],
)
def test_a_running_summary_whose_heartbeat_stopped_is_listed_stale(tmp_path: Path, beats: dict[str, Any], expected: str) -> None:
    (name, docs), = beats.items()
    root = tmp_path / "root"
    with open_store(str(root)) as store:
        for rank, (status, age) in enumerate(docs):
            stem = name if len(docs) == 1 else f"{name}.rank{rank}"
            store.write(f"{name}/logs/{stem}_run.json", summary(status, age))
    (run,) = list_runs(str(root), kind="logged")
    assert run["status"] == expected
    if expected == "stale":
        with open_store(str(root)) as store:  # a second run, so that `expstore ls` prints the catalog table
            store.write("other/logs/other_run.json", summary("completed", 5.0))
        line = next(line for line in cli("ls", "root", cwd=tmp_path).stdout.splitlines() if line.startswith(name))
        assert "stale (last heartbeat " in line and "m ago)" in line


def test_a_running_logger_rewrites_its_summary_each_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_catalog, "HEARTBEAT_SECONDS", 0.05)
    path = tmp_path / "logs" / "beat_run.json"
    with ExperimentLogger("beat", str(tmp_path / "logs"), **QUIET) as logger:
        logger.log_metrics({"loss": 1.0})
        logger.flush()
        first = json.loads(path.read_text())["heartbeat_time"]
        deadline = time.monotonic() + 30
        while json.loads(path.read_text())["heartbeat_time"] == first:  # no new event: the heartbeat alone writes
            assert time.monotonic() < deadline, "the summary was not rewritten"
            time.sleep(0.02)
        assert json.loads(path.read_text())["status"] == "running"
    assert json.loads(path.read_text())["status"] == "completed"


def test_a_sigkilled_logger_shows_stale_once_its_heartbeat_stops(tmp_path: Path) -> None:
    url = str(tmp_path / "root" / "run" / "logs")
    root = str(tmp_path / "root")

    def statuses() -> list[str]:
        return [r["status"] for r in list_runs(root, kind="logged")]

    proc = spawn("kill", url, "killed", 0.1, heartbeat=0.2)  # stale 5 beats (1 s) after the last summary
    try:
        deadline = time.monotonic() + 60
        while statuses() != ["running"]:  # the start summary lands within a flusher tick or two
            assert time.monotonic() < deadline, "the live run never showed as running"
            time.sleep(0.05)
        first_beat = list_runs(root, kind="logged")[0]["heartbeat_time"]
        while list_runs(root, kind="logged")[0]["heartbeat_time"] == first_beat:  # alive: it keeps beating
            assert time.monotonic() < deadline, "the live run stopped beating"
            time.sleep(0.05)
        assert statuses() == ["running"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    deadline = time.monotonic() + 60
    while statuses() == ["running"]:
        assert time.monotonic() < deadline, "the killed run still shows as running"
        time.sleep(0.1)
    assert statuses() == ["stale"]
