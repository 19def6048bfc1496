"""`search_runs` over runs written by the real ExperimentLogger, on an SQLite catalog file: MLflow's
documented filters select the right runs, numbers compare as numbers, hostile values round-trip,
and the catalog follows the store (new, finished and deleted runs; a deleted catalog file)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from expstore.catalog import RunRecord, open_catalog, search_runs
from expstore.cli import main
from expstore.errors import BackendUnavailable
from expstore.experiment_logger import ExperimentLogger

from ..workers import REPO_ROOT

RUNS = {  # name -> (config, metrics, final status)
    "lr-small": ({"model": "LogisticRegression", "lambda": "0.001", "layers": 9, "optimizer": {"name": "adam", "lr": 0.001}},
                 {"accuracy": 0.95, "error": 0.04, "loss": 0.05}, "completed"),
    "cnn": ({"model": "CNN", "layers": 10, "optimizer": {"name": "sgd", "lr": 0.1}},
            {"accuracy": 0.80, "prediction accuracy": 0.95, "loss": 0.5}, "completed"),
    "lr-failed": ({"model": "LogisticRegression", "lambda": "0.01", "layers": 12, "optimizer": {"name": "adam", "lr": 0.01}},
                  {"accuracy": 0.5, "error": 0.3, "loss": 0.3}, "failed"),
    "no-metrics": ({"model": "Inception", "layers": 100, "optimizer": {"name": "adam", "lr": 0.02}}, {}, "completed"),
}


def log_run(root: Path, name: str, config: dict, metrics: dict, status: str) -> None:
    logger = ExperimentLogger(name, root / name / "logs", log_to_console=False)
    logger.log_config(config)
    if metrics:
        logger.log_metrics(metrics, step=1)
    logger.finalize(status)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    for name, (config, metrics, status) in RUNS.items():
        log_run(folder, name, config, metrics, status)
    return folder


@pytest.fixture
def catalog_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def names(frame: pd.DataFrame) -> set[str]:
    return set(frame["name"])


@pytest.mark.parametrize(("text", "expected"), [
    (None, set(RUNS)),
    ("metrics.accuracy > 0.92", {"lr-small"}),
    ('params.model = "LogisticRegression" and params.lambda = "0.001" and metrics.error <= 0.05', {"lr-small"}),
    ('attributes.status = "FAILED"', {"lr-failed"}),
    ("status = 'FINISHED'", {"lr-small", "cnn", "no-metrics"}),
    ("params.model = 'CNN' and params.layers = '10' and metrics.'prediction accuracy' >= 0.945", {"cnn"}),
    ("params.model = 'Inception'", {"no-metrics"}),
    ("metrics.error != 0.04", {"lr-failed"}),  # as MLflow: a run without the metric does not match !=
    ("params.layers < 10", {"lr-small"}),  # numbers as numbers: as text '12' and '100' sort before '9'
    ("params.layers >= 12", {"lr-failed", "no-metrics"}),
    ("params.optimizer.lr <= 0.01 AND params.optimizer.name = 'adam'", {"lr-small", "lr-failed"}),
    ("metrics.loss < 0.1 OR (params.optimizer.name = 'sgd' AND status = 'completed')", {"lr-small", "cnn"}),
    ("name LIKE 'lr-%'", {"lr-small", "lr-failed"}),
    ("name LIKE 'LR-%'", set()),  # LIKE keeps case, ILIKE ignores it
    ("name ILIKE 'LR-%'", {"lr-small", "lr-failed"}),
    ("params.model IN ('CNN', 'Inception')", {"cnn", "no-metrics"}),
    ("params.model NOT IN ('CNN', 'Inception')", {"lr-small", "lr-failed"}),
    ("metrics.error IS NULL", {"cnn", "no-metrics"}),
    ("params.lambda IS NOT NULL AND tags.host IS NOT NULL", {"lr-small", "lr-failed"}),
    ("run_id = 'cnn/logs/cnn'", {"cnn"}),
    ("duration_seconds >= 0 AND start_time > '2000-01-01' AND end_time < 4102444800", set(RUNS)),
])
def test_filters_select_the_right_runs(root: Path, catalog_url: str, text: str | None, expected: set[str]) -> None:
    assert names(search_runs(str(root), text, catalog=catalog_url)) == expected


def test_columns_and_dtypes(root: Path, catalog_url: str) -> None:
    frame = search_runs(str(root), catalog=catalog_url)
    assert list(frame.columns[:7]) == ["run_id", "name", "url", "status", "start_time", "end_time", "duration_seconds"]
    assert str(frame["start_time"].dtype) == str(frame["end_time"].dtype) == "datetime64[ns, UTC]"
    assert frame["duration_seconds"].dtype == "float64" and frame["status"].dtype == "string"
    assert frame["metrics.loss"].dtype == "float64" and frame["params.layers"].dtype == "float64"
    assert frame["params.model"].dtype == "string" and frame["params.lambda"].dtype == "float64"
    row = frame.set_index("name").loc["cnn"]
    assert row["url"] == str(root / "cnn") and row["run_id"] == "cnn/logs/cnn" and row["status"] == "completed"
    assert row["params.optimizer.lr"] == 0.1 and row["metrics.prediction accuracy"] == 0.95
    assert row["tags.host"] == os.uname().nodename
    assert row["start_time"] <= row["end_time"] <= pd.Timestamp.now(tz="UTC")


def test_order_by_puts_nulls_last_and_max_results_cuts(root: Path, catalog_url: str) -> None:
    up = search_runs(str(root), order_by=["metrics.error"], catalog=catalog_url)
    assert list(up["name"][:2]) == ["lr-small", "lr-failed"]
    down = search_runs(str(root), order_by=["metrics.error DESC", "name"], catalog=catalog_url)
    assert list(down["name"]) == ["lr-failed", "lr-small", "cnn", "no-metrics"]
    assert list(search_runs(str(root), order_by="params.layers DESC", max_results=2, catalog=catalog_url)["name"]) == [
        "no-metrics", "lr-failed"]
    assert search_runs(str(root), max_results=0, catalog=catalog_url).empty


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"filter": "metrics.loss < 'x'"}, "position 0: metrics.loss is a metric: compare it with a number"),
    ({"filter": "tags.host = 3"}, "position 0: tags.host is a tag: compare it with a quoted string"),
    ({"filter": "status = 1"}, "status is text"),
    ({"filter": "start_time > 'yesterday'"}, "start_time is a time"),
    ({"filter": "params.a IN (1, 'x')"}, "mixes numbers and strings"),
    ({"filter": "metrics.loss <"}, "position 14: expected a number or a quoted string"),
    ({"max_results": -1}, "max_results must be None or an int >= 0, got -1"),
    ({"order_by": ["metrics.loss sideways"]}, "expected ASC, DESC"),
])
def test_bad_input_is_a_value_error_naming_it(root: Path, catalog_url: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        search_runs(str(root), catalog=catalog_url, **kwargs)


HOSTILE = ["it's \"quoted\" `back`", "x'; DROP TABLE expstore_runs; --", "λ ünïcødé ✓ 日本", "%_\\", "v" * 10_000]


def test_hostile_names_and_values_are_stored_and_found_exactly(tmp_path: Path, catalog_url: str) -> None:
    root = tmp_path / "hostile"
    name = "run 'one\"; DROP TABLE expstore_params; -- ✓"
    log_run(root, name, {f"k{i}": v for i, v in enumerate(HOSTILE)} | {"we'ird key `x`": "y"}, {"loss": 1.0}, "completed")
    log_run(root, "plain", {"k0": "other"}, {}, "completed")
    for i, value in enumerate(HOSTILE):
        quoted = "'" + value.replace("'", "''") + "'"
        found = search_runs(str(root), f"params.k{i} = {quoted}", catalog=catalog_url)
        assert list(found["name"]) == [name] and found[f"params.k{i}"][0] == value
    assert list(search_runs(str(root), "params.`we'ird key ``x``` = 'y'", catalog=catalog_url)["name"]) == [name]
    assert list(search_runs(str(root), "params.k3 LIKE '\\%\\_%'", catalog=catalog_url)["name"]) == [name]  # \ escapes
    assert list(search_runs(str(root), "params.k3 LIKE '\\_%'", catalog=catalog_url)["name"]) == []
    quoted_name = "'" + name.replace("'", "''") + "'"
    assert list(search_runs(str(root), f"name = {quoted_name}", catalog=catalog_url)["name"]) == [name]
    assert len(search_runs(str(root), catalog=catalog_url)) == 2  # every table is still there


def test_catalog_follows_the_store(tmp_path: Path, catalog_url: str) -> None:
    root = tmp_path / "live"
    log_run(root, "a", {"x": 1}, {"loss": 1.0}, "completed")
    running = ExperimentLogger("b", root / "b" / "logs", log_to_console=False)
    running.log_config({"x": 2})
    running.log_metrics({"loss": 0.5})
    assert running.flush()
    first = search_runs(str(root), catalog=catalog_url).set_index("name")
    assert first.loc["b", "status"] == "running" and pd.isna(first.loc["b", "end_time"])
    running.log_metrics({"loss": 0.25})
    running.finalize("completed")
    log_run(root, "c", {"x": 3}, {}, "completed")
    second = search_runs(str(root), catalog=catalog_url).set_index("name")
    assert sorted(second.index) == ["a", "b", "c"]
    assert second.loc["b", "status"] == "completed" and second.loc["b", "metrics.loss"] == 0.25
    for path in sorted((root / "a").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    assert names(search_runs(str(root), catalog=catalog_url)) == {"b", "c"}
    Path(catalog_url.removeprefix("sqlite:///")).unlink()
    for suffix in ("-wal", "-shm"):
        Path(catalog_url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)
    assert names(search_runs(str(root), "params.x >= 2", catalog=catalog_url)) == {"b", "c"}


def test_a_running_run_whose_heartbeat_stopped_is_stale(tmp_path: Path, catalog_url: str) -> None:
    root = str(tmp_path / "pushed")
    with open_catalog(catalog_url) as catalog:
        old = time.time() - 3600
        for run_id, beat in (("dead", old), ("alive", time.time())):
            catalog.record_run(RunRecord(root=root, run_id=run_id, name=run_id, url=root, status="running",
                                         start_time=old, heartbeat_time=beat, heartbeat_seconds=60.0))
        catalog.record_run(RunRecord(root=root, run_id="dead", name="dead", url=root, status="running",
                                     start_time=old, heartbeat_time=old, heartbeat_seconds=60.0))  # idempotent
        frame = catalog.search(root, order_by=["name"])
        assert list(zip(frame["name"], frame["status"], strict=True)) == [("alive", "running"), ("dead", "stale")]
        assert list(catalog.search(root, "status = 'stale'")["name"]) == ["dead"]
        with pytest.raises(TypeError, match="record_run takes a RunRecord"):
            catalog.record_run({"run_id": "x"})  # type: ignore[arg-type]


RECORD_MANY = """
import sys
from expstore.catalog import RunRecord, open_catalog
url, root, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open_catalog(url) as catalog:
    for i in range(15):
        catalog.record_run(RunRecord(root=root, run_id=f"w{worker}-{i}", name=f"w{worker}-{i}", url=root,
                                     status="completed", params={"worker": worker, "i": i}, metrics={"loss": i / 10}))
"""


def test_record_run_from_many_processes_at_once_loses_none(tmp_path: Path, catalog_url: str) -> None:
    root = str(tmp_path / "many")
    open_catalog(catalog_url).close()  # the tables exist before the race
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", RECORD_MANY, catalog_url, root, str(w)], cwd=REPO_ROOT, env=env)
             for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    with open_catalog(catalog_url) as catalog:
        frame = catalog.search(root)
    assert len(frame) == 60 and frame["params.worker"].value_counts().to_dict() == {0.0: 15, 1.0: 15, 2.0: 15, 3.0: 15}


@pytest.mark.parametrize("url", ["sqlite:////no/such/folder/catalog.db", "postgresql://nobody@127.0.0.1:1/x"])
def test_an_unreachable_catalog_is_named_within_ten_seconds(root: Path, url: str) -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        search_runs(str(root), catalog=url)
    assert time.monotonic() - started < 10
    assert url.split("://")[1].split("/")[0] in str(caught.value) or "/no/such/folder" in str(caught.value)


def test_bad_catalog_urls() -> None:
    with pytest.raises(ValueError, match="not a catalog URL: 'no-scheme'"):
        open_catalog("no-scheme")
    with pytest.raises(ValueError, match="unsupported catalog database 'mysql://u@h/db'"):
        open_catalog("mysql://u@h/db")


def test_the_default_catalog_is_a_per_user_sqlite_file(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXPSTORE_CATALOG", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert len(search_runs(str(root))) == len(RUNS)
    assert (tmp_path / "cache" / "expstore" / "catalog.sqlite").is_file()
    monkeypatch.setenv("EXPSTORE_CATALOG", f"sqlite:///{tmp_path / 'env.db'}")
    assert len(search_runs(str(root), "params.layers = 9")) == 1 and (tmp_path / "env.db").is_file()


def test_cli_search_prints_a_table_json_and_csv(root: Path, catalog_url: str, capsys: pytest.CaptureFixture) -> None:
    args = ["search", str(root), "params.optimizer.name = 'adam'", "--order-by", "metrics.loss", "--catalog", catalog_url]
    assert main(args + ["--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run_id", "name", "url", "status"] and [line.split()[1] for line in lines[1:]] == [
        "lr-small", "lr-failed"]
    assert main(args + ["--json"]) == 0
    assert [r["name"] for r in pd.read_json(io.StringIO(capsys.readouterr().out)).to_dict("records")] == [
        "lr-small", "lr-failed", "no-metrics"]
    assert main(args + ["--csv"]) == 0
    assert list(pd.read_csv(io.StringIO(capsys.readouterr().out))["name"]) == ["lr-small", "lr-failed", "no-metrics"]
    assert main(["search", str(root), "metrics.loss <<", "--catalog", catalog_url]) == 2
    assert "invalid filter at position 14" in capsys.readouterr().err


def test_importing_the_logger_does_not_import_sqlalchemy() -> None:
    code = "import sys, expstore, expstore.experiment_logger; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.stdout.strip() == "False"


def test_a_push_that_lands_after_a_sync_of_the_final_summary_is_corrected_by_the_next_sync(tmp_path: Path, catalog_url: str) -> None:
    log_run(tmp_path, "late", {"lr": 0.1}, {"loss": 0.2}, "completed")
    for _ in range(2):  # the second sync finds nothing changed and remembers the listing
        assert search_runs(tmp_path, catalog=catalog_url)["status"].tolist() == ["completed"]
    logs = str(tmp_path / "late" / "logs")  # the pushing logger's root and run id: the same row as the sync's
    open_catalog(catalog_url).record_run(RunRecord(root=logs, run_id="late", name="late", url=str(tmp_path / "late"),
                                                   status="running", metrics={"loss": 0.9}))
    found = search_runs(tmp_path, catalog=catalog_url)
    assert found["status"].tolist() == ["completed"] and found["metrics.loss"].tolist() == [0.2]


def test_a_catalog_made_before_the_remembered_listings_gains_their_tables(tmp_path: Path, catalog_url: str) -> None:
    log_run(tmp_path, "first", {"lr": 0.1}, {"loss": 0.2}, "completed")
    assert names(search_runs(tmp_path, catalog=catalog_url)) == {"first"}
    with open_catalog(catalog_url) as catalog, catalog.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE expstore_listings")
        conn.exec_driver_sql("DROP TABLE expstore_state")
    for _ in range(3):  # a full compare, one that remembers the listing, one that trusts it
        assert names(search_runs(tmp_path, catalog=catalog_url)) == {"first"}
    log_run(tmp_path, "second", {"lr": 0.5}, {"loss": 0.9}, "completed")
    assert names(search_runs(tmp_path, catalog=catalog_url)) == {"first", "second"}
