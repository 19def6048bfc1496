"""The dashboard's JSON API over real HTTP, against `expstore ui` started as users start it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from expstore import open_store
from expstore.experiment_logger import ExperimentLogger
from tests.ui.runs import HOSTILE_NAME, write_run
from tests.workers import REPO_ROOT


@pytest.fixture
def root(tmp_path: Path) -> str:
    """A local root with three finished runs of different learning rates, the first with two checkpoints."""
    path = str(tmp_path / "runs")
    for i, lr in enumerate((0.1, 0.01, 0.001)):
        write_run(path, f"exp{i}", steps=10 + i, config={"lr": lr, "model": {"depth": i + 1}}, checkpoints=2 if i == 0 else 0)
    return path


def test_the_runs_page_lists_every_run_and_the_filter_narrows_it(root: str, start_dashboard: Any) -> None:
    ui = start_dashboard(root)
    status, page = ui.api("runs")
    assert status == 200 and page["total"] == 3
    assert sorted(r["name"] for r in page["runs"]) == ["exp0", "exp1", "exp2"]
    assert page["param_keys"] == ["lr", "model.depth"] and page["metric_keys"] == ["acc", "loss"]
    status, page = ui.api("runs", filter="params.lr < 0.05 and metrics.loss < 0.095", order_by="params.lr DESC")
    assert status == 200 and [r["name"] for r in page["runs"]] == ["exp1", "exp2"] and page["total"] == 2
    assert page["runs"][0]["metrics"]["loss"] == pytest.approx(1 / 11) and page["runs"][0]["status"] == "completed"
    status, page = ui.api("runs", order_by="params.lr", limit=1, offset=1)
    assert status == 200 and [r["name"] for r in page["runs"]] == ["exp1"] and page["total"] == 3 and page["offset"] == 1


@pytest.mark.parametrize(("params", "expected"), [
    ({"filter": "metrics.loss <"}, "position"),
    ({"filter": "metrics.loss ~ 1"}, "position"),
    ({"order_by": "metrics.loss SIDEWAYS"}, "SIDEWAYS"),
    ({"limit": "0"}, "limit"),
    ({"limit": "many"}, "limit"),
    ({"offset": "-1"}, "offset"),
])
def test_a_bad_search_is_a_400_naming_the_problem(root: str, start_dashboard: Any, params: dict[str, str], expected: str) -> None:
    status, doc = start_dashboard(root).api("runs", **params)
    assert status == 400 and expected in doc["error"]


def test_a_run_gives_its_config_metrics_events_and_checkpoints(root: str, start_dashboard: Any) -> None:
    ui = start_dashboard(root)
    status, run = ui.api("run", id="exp0/logs/exp0")
    assert status == 200 and run["name"] == "exp0" and run["status"] == "completed"
    assert run["config"] == {"lr": 0.1, "model": {"depth": 1}} and run["environment"]["hostname"]
    assert run["checkpoints"].endswith("exp0/checkpoints")
    status, metrics = ui.api("metrics", id="exp0/logs/exp0")
    assert status == 200 and sorted(metrics["series"]) == ["acc", "loss"]
    assert metrics["series"]["loss"]["step"] == list(range(1, 11))
    assert metrics["series"]["loss"]["value"] == pytest.approx([1 / s for s in range(1, 11)])
    assert all(isinstance(t, float) for t in metrics["series"]["loss"]["time"])
    status, again = ui.api("metrics", id="exp0/logs/exp0", since=metrics["cursor"])
    assert status == 200 and again == {"cursor": metrics["cursor"], "series": {}}
    status, events = ui.api("events", id="exp0/logs/exp0", limit=3)
    assert [e["event_type"] for e in events["events"]][-1] == "experiment_end" and len(events["events"]) == 3
    status, ckpts = ui.api("checkpoints", id="exp0/logs/exp0")
    assert [c["iteration"] for c in ckpts["checkpoints"]] == [10, 20]
    assert all(c["size"] > 8000 for c in ckpts["checkpoints"]) and ckpts["checkpoints"][1]["metadata"] == {"loss": 0.5}
    assert ui.api("checkpoints", id="exp1/logs/exp1") == (200, {"checkpoints": []})


def test_verify_reads_a_checkpoint_on_demand_and_reports_damage(root: str, start_dashboard: Any) -> None:
    ui = start_dashboard(root)
    assert ui.api("verify", id="exp0/logs/exp0", iteration=20) == (200, {"iteration": 20, "ok": True, "problem": None})
    damaged = next((Path(root) / "exp0" / "checkpoints").glob("*000010*"))
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    status, doc = ui.api("verify", id="exp0/logs/exp0", iteration=10)
    assert status == 200 and doc["ok"] is False and "checksum" in doc["problem"] and damaged.name in doc["problem"]
    status, doc = ui.api("verify", id="exp0/logs/exp0", iteration=30)
    assert status == 404 and "iteration 30" in doc["error"]
    assert ui.api("verify", id="exp0/logs/exp0")[0] == 400


BAD_IDS = ["../exp0/logs/exp0", "/etc/passwd", "exp0/../exp1/logs/exp1", "exp0\\logs\\exp0", "", "exp0/logs/",
           "exp0/logs/exp0\x00", "exp0//logs/exp0"]


def test_a_run_id_outside_the_root_or_not_a_key_is_a_400(root: str, start_dashboard: Any) -> None:
    ui = start_dashboard(root)
    for endpoint in ("run", "metrics", "events", "checkpoints", "verify"):
        for run_id in BAD_IDS:
            status, doc = ui.api(endpoint, id=run_id, iteration=10)
            assert status == 400 and "run" in doc["error"], (endpoint, run_id, doc)


def test_an_unknown_run_is_a_404_and_unknown_paths_and_methods_answer_json(root: str, start_dashboard: Any) -> None:
    ui = start_dashboard(root)
    status, doc = ui.api("run", id="nowhere/logs/exp9")
    assert status == 404 and "nowhere/logs/exp9" in doc["error"]
    for path, method, expected in (("api/nothing", "GET", 404), ("api/runs", "POST", 405), ("static/nothing.js", "GET", 404)):
        status, headers, body = ui.request(path, method=method)
        assert status == expected and headers["content-type"].startswith("application/json") and "error" in json.loads(body)
    host, port = ui.url.split("//")[1].rstrip("/").split(":")
    for raw in ("/static/../../pyproject.toml", "/static/%2e%2e/%2e%2e/pyproject.toml", "/static/..%2f..%2fpyproject.toml"):
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("GET", raw)
        answer = conn.getresponse()
        body = answer.read()
        assert answer.status == 404 and b"[project]" not in body, raw
        conn.close()


def test_a_hostile_run_name_is_stored_and_served_exactly(tmp_path: Path, start_dashboard: Any) -> None:
    root = str(tmp_path / "runs")
    run_id = write_run(root, HOSTILE_NAME, config={"note": "'; DROP TABLE expstore_runs; --", "text": "é\u2603" * 3})
    ui = start_dashboard(root)
    status, page = ui.api("runs")
    assert [r["name"] for r in page["runs"]] == [HOSTILE_NAME]
    status, run = ui.api("run", id=run_id)
    assert status == 200 and run["name"] == HOSTILE_NAME and run["config"]["note"] == "'; DROP TABLE expstore_runs; --"
    status, page = ui.api("runs", filter=f"name = '{HOSTILE_NAME}'")
    assert status == 200 and page["total"] == 1


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_a_live_run_gains_points_once_each(tmp_path: Path, start_dashboard: Any, backend: str, request: Any) -> None:
    """Local logs grow by appends, S3 logs by new segments and a finalize merge: each point arrives once."""
    if backend == "local":
        root, options, args, env = str(tmp_path / "runs"), {}, [], {}
    else:
        server = request.getfixturevalue("moto_server")
        root, options = f"s3://expstore-test/ui-{tmp_path.name}", server.storage_options
        args, env = ["--endpoint-url", server.endpoint_url], _s3_env(options)
    worker = subprocess.Popen([sys.executable, "-m", "tests.workers.ui_workers", f"{root}/live/logs", "live"], cwd=REPO_ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "UI_WORKER_OPTIONS": json.dumps(options)})
    try:
        assert worker.stdout.readline().strip() == "flushed 0"
        ui = start_dashboard(root, *args, env=env)
        status, run = ui.api("run", id="live/logs/live")
        assert status == 200 and run["status"] == "running"
        cursor, steps = 0, []
        for batch in (3, 5, 7):
            worker.stdin.write(f"log {batch}\n")
            worker.stdin.flush()
            assert worker.stdout.readline().strip() == f"flushed {len(steps) + batch}"
            status, doc = _metrics_after_refresh(ui, "live/logs/live", cursor)
            cursor = doc["cursor"]
            steps += doc["series"]["loss"]["step"]
        assert steps == list(range(1, 16))
        worker.stdin.write("end\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "ended"
        status, events = ui.api("events", id="live/logs/live", since=cursor)
        deadline = time.monotonic() + 10
        while not any(e["event_type"] == "experiment_end" for e in events["events"]) and time.monotonic() < deadline:
            status, more = ui.api("events", id="live/logs/live", since=events["cursor"])
            events = {"cursor": more["cursor"], "events": events["events"] + more["events"]}
        assert [e["event_type"] for e in events["events"]].count("experiment_end") == 1
        status, whole = ui.api("metrics", id="live/logs/live")
        assert whole["series"]["loss"]["step"] == list(range(1, 16))
    finally:
        worker.kill()
        worker.wait()


def _s3_env(options: dict[str, Any]) -> dict[str, str]:
    """The environment that gives a child process the S3 credentials of `options`."""
    return {"AWS_ACCESS_KEY_ID": options["key"], "AWS_SECRET_ACCESS_KEY": options["secret"], "AWS_DEFAULT_REGION": "us-east-1"}


def _metrics_after_refresh(ui: Any, run_id: str, cursor: int) -> tuple[int, Any]:
    """The first answer after `cursor` that holds new points (the server looks at the store at most every 0.2 s)."""
    deadline = time.monotonic() + 10
    while True:
        status, doc = ui.api("metrics", id=run_id, since=cursor)
        if doc["series"] or time.monotonic() > deadline:
            return status, doc


def test_with_a_token_every_request_needs_it(root: str, start_dashboard: Any) -> None:
    ui = start_dashboard(root, token="s3cret-token-123")
    for path in ("", "api/info", "api/runs", "static/app.js"):
        for method in ("GET", "HEAD"):
            status, headers, body = ui.request(path, token=False, method=method)
            assert status == 401 and (method == "HEAD" or "token" in json.loads(body)["error"]), (path, method)
        assert ui.request(path, token="wrong-token-456")[0] == 401
    assert ui.request("api/info")[0] == 200
    cookie = f"expstore_token_{ui.url.rstrip('/').rpartition(':')[2]}"  # one cookie per port: two dashboards do not clash
    status, headers, _ = ui.request("api/info?token=s3cret-token-123", token=False)
    assert status == 200 and f"{cookie}=s3cret-token-123" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]
    other_apps = 'session={"user":1}; a=b c; expstore_token_1=other'  # cookies of other apps on localhost
    assert ui.request("api/runs", token=False, headers={"Cookie": f"{other_apps}; {cookie}=s3cret-token-123"})[0] == 200
    assert ui.request("api/runs", token=False, headers={"Cookie": f"{cookie}=nope"})[0] == 401
    assert ui.request("api/runs", token=False, headers={"Host": "attacker.example"})[0] == 401


def test_without_a_token_only_requests_for_this_machine_are_answered(root: str, start_dashboard: Any) -> None:
    """A web page whose DNS name was rebound to 127.0.0.1 sends its own name as Host: it gets nothing."""
    ui = start_dashboard(root)
    port = ui.url.rstrip("/").rpartition(":")[2]
    for host in ("attacker.example", f"attacker.example:{port}", "127.0.0.1.attacker.example", "10.0.0.1"):
        status, headers, body = ui.request("api/runs", headers={"Host": host})
        assert status == 403 and "127.0.0.1" in json.loads(body)["error"], host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert ui.request("api/runs", headers={"Host": host})[0] == 200, host


@pytest.mark.parametrize(("args", "expected"), [
    (["--host", "0.0.0.0"], "--token"),
    (["--host", "192.168.1.5"], "--token"),
    (["--token", "short"], "at least 8"),
    (["--token", "has space in it"], "at least 8"),
    (["--catalog", "postgresql://nobody@127.0.0.1:1/none"], "127.0.0.1:1"),
    (["--refresh", "0"], "refresh_seconds"),
])
def test_unsafe_or_bad_options_are_refused_before_serving(tmp_path: Path, args: list[str], expected: str) -> None:
    done = subprocess.run([sys.executable, "-m", "expstore", "ui", str(tmp_path), "--port", "0", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and expected in done.stderr and "serving" not in done.stdout


def test_a_wrong_root_url_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "expstore", "ui", "nosuch://bucket/x", "--port", "0"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "nosuch" in done.stderr


STORE_BACKENDS = ["local", "moto", "hdf5", "zarr-local"]


def test_every_backend_serves_the_same_run_and_nothing_is_written(store_location: tuple[str, dict[str, Any]],
                                                                   start_dashboard: Any, tmp_path: Path) -> None:
    url, options = store_location
    write_run(url, "exp0", steps=12, checkpoints=1, **options)
    with open_store(url, **options) as store:
        before = store.list_versions("")
    env = _s3_env(options) if "key" in options else {}
    extra = ["--endpoint-url", options["endpoint_url"]] if "endpoint_url" in options else []
    ui = start_dashboard(url, *extra, env=env)
    status, page = ui.api("runs")
    assert status == 200 and [r["run_id"] for r in page["runs"]] == ["exp0/logs/exp0"]
    status, metrics = ui.api("metrics", id="exp0/logs/exp0")
    assert metrics["series"]["loss"]["step"] == list(range(1, 13))
    assert [c["iteration"] for c in ui.api("checkpoints", id="exp0/logs/exp0")[1]["checkpoints"]] == [10]
    assert ui.api("verify", id="exp0/logs/exp0", iteration=10)[1]["ok"] is True
    assert ui.api("run", id="exp0/logs/exp0")[1]["config"] == {"lr": 0.01, "optimizer": "sgd"}
    with open_store(url, **options) as store:
        assert store.list_versions("") == before


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_stops_the_server_cleanly(root: str, start_dashboard: Any, stop: int) -> None:
    ui = start_dashboard(root)
    assert ui.api("info")[0] == 200
    ui.process.send_signal(stop)
    assert ui.process.wait(timeout=30) == 0
    ui.reader.join(timeout=30)
    assert "expstore ui: stopped" in "".join(ui.output) and "Traceback" not in "".join(ui.output)


def test_a_line_still_being_written_waits_and_a_rewritten_log_is_read_again(root: str, start_dashboard: Any) -> None:
    ui = start_dashboard(root)
    log = Path(root) / "exp1" / "logs" / "exp1_structured.jsonl"
    status, doc = ui.api("metrics", id="exp1/logs/exp1")
    cursor, steps = doc["cursor"], doc["series"]["loss"]["step"]
    line = json.dumps({"timestamp": "2026-01-01T00:00:00+00:00", "event_type": "metrics",
                       "data": {"step": 99, "metrics": {"loss": 0.5}}})
    with log.open("a") as f:
        f.write(line[:25])  # a writer that has not finished its line
    time.sleep(0.25)  # let the server's next look at the store see the torn line (no assert depends on timing)
    status, doc = ui.api("metrics", id="exp1/logs/exp1", since=cursor)
    assert status == 200 and doc["series"] == {}
    with log.open("a") as f:
        f.write(line[25:] + "\n")
    status, doc = _metrics_after_refresh(ui, "exp1/logs/exp1", cursor)
    assert doc["series"]["loss"] == {"step": [99], "time": [1767225600.0], "value": [0.5]}
    for rewritten in ([99], [7] + list(range(100, 140))):  # shorter, then longer than what was read: read again whole
        log.write_text("".join(line.replace('"step": 99', f'"step": {s}') + "\n" for s in rewritten))
        deadline = time.monotonic() + 10
        while (whole := ui.api("metrics", id="exp1/logs/exp1")[1])["series"]["loss"]["step"] != rewritten \
                and time.monotonic() < deadline:
            pass
        assert whole["series"]["loss"]["step"] == rewritten
    assert steps == list(range(1, 12))


def test_a_rank_that_flushes_late_adds_its_points_after_the_cursor(tmp_path: Path, start_dashboard: Any) -> None:
    """Two ranks of one run: rank 1's events are timestamped between rank 0's but flushed after a poll."""
    root = str(tmp_path / "runs")
    ranks = [ExperimentLogger("mr", f"{root}/mr/logs", log_to_console=False, rank=r, flush_interval=600) for r in (0, 1)]
    for step in range(1, 6):
        for rank, logger in enumerate(ranks):
            logger.log_metrics({"loss": float(step)}, step=100 * rank + step)
    ranks[0].flush()
    ui = start_dashboard(root)
    status, first = _metrics_after_refresh(ui, "mr/logs/mr", 0)
    ranks[1].flush()
    status, second = _metrics_after_refresh(ui, "mr/logs/mr", first["cursor"])
    seen = first["series"]["loss"]["step"] + second["series"]["loss"]["step"]
    assert sorted(seen) == [1, 2, 3, 4, 5, 101, 102, 103, 104, 105]
    for logger in ranks:
        logger.finalize()


def test_values_json_cannot_hold_exactly_still_answer(tmp_path: Path, start_dashboard: Any) -> None:
    root = str(tmp_path / "runs")
    write_run(root, "big", config={"seed": 2 ** 70, "nan": float("nan")})
    ui = start_dashboard(root)
    status, run = ui.api("run", id="big/logs/big")
    assert status == 200 and run["config"] == {"seed": 2 ** 70, "nan": None}
    assert ui.api("events", id="big/logs/big")[0] == 200
    status, doc = ui.api("runs", offset=str(2 ** 70))
    assert status == 400 and "offset" in doc["error"]


def test_a_resumed_run_on_s3_gains_its_new_segments_once(tmp_path: Path, start_dashboard: Any, moto_server: Any) -> None:
    """A second session of a finished run: its final log stays, new segments come beside it."""
    root, options = f"s3://expstore-test/ui-resumed-{tmp_path.name}", moto_server.storage_options
    write_run(root, "live", steps=4, **options)
    ui = start_dashboard(root, "--endpoint-url", moto_server.endpoint_url, env=_s3_env(options))
    status, first = ui.api("metrics", id="live/logs/live")
    assert first["series"]["loss"]["step"] == [1, 2, 3, 4]
    worker = subprocess.Popen([sys.executable, "-m", "tests.workers.ui_workers", f"{root}/live/logs", "live"], cwd=REPO_ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "UI_WORKER_OPTIONS": json.dumps(options)})
    try:
        assert worker.stdout.readline().strip() == "flushed 0"
        cursor, steps = first["cursor"], []
        for batch in (2, 3):
            worker.stdin.write(f"log {batch}\n")
            worker.stdin.flush()
            assert worker.stdout.readline().strip() == f"flushed {len(steps) + batch}"
            status, doc = _metrics_after_refresh(ui, "live/logs/live", cursor)
            cursor, steps = doc["cursor"], steps + doc["series"]["loss"]["step"]
        assert steps == [1, 2, 3, 4, 5]
    finally:
        worker.kill()
        worker.wait()
