"""The catalog's behaviour on a real PostgreSQL, side by side with SQLite (one code path): searching runs
that real loggers wrote, incremental sync, hostile values, many writers, unreachable databases."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from expstore import open_store
from expstore.catalog import RunRecord, open_catalog, search_runs
from expstore.catalog.engine import writing
from expstore.catalog.writing import upsert_runs
from expstore.errors import BackendUnavailable
from expstore.experiment_logger import create_experiment_logger

from ..pgserver import PostgresServer
from ..wrapping import DelegatingStore

# name -> (config, last metrics, final status)
RUNS: dict[str, tuple[dict[str, Any], dict[str, float], str]] = {
    "alpha": ({"optimizer": "adam", "lr": 0.001, "batch_size": 8}, {"loss": 0.05, "val loss": 0.07}, "completed"),
    "beta": ({"optimizer": "sgd", "lr": 0.01, "batch_size": 64}, {"loss": 0.2, "val loss": 0.3}, "completed"),
    "gamma": ({"optimizer": "adam", "lr": 0.1, "batch_size": 128}, {"loss": 0.5, "val loss": 2.0}, "failed"),
    "delta": ({"optimizer": "Adam", "lr": 0.0005, "batch_size": 16}, {"loss": 0.08}, "completed"),
    "eps": ({"optimizer": "rmsprop", "lr": 1e-05, "batch_size": 32}, {"acc": 0.9}, "completed"),  # no loss: NULL
}
HOSTILE_NAME = "o'brien\"; DROP TABLE expstore_runs; -- ünï ✓"
HOSTILE_VALUES = {
    "quote": "it's \"quoted\" \\ back",
    "sql": "x'); DROP TABLE expstore_params; --",
    "unicode": "naïve café 学习 🚀",
    "long": "€" * 10_000,
    "percent": "100% _done_",
}


def log_run(root: str, name: str, config: dict[str, Any], metrics: dict[str, float], status: str) -> None:
    """One run written by a real logger under ``root/<name>/logs``."""
    logger = create_experiment_logger(name, f"{root}/{name}/logs", verbose=False, catalog=False, flush_interval=0.05)
    logger.log_config(config)
    logger.log_metrics({k: v * 10 for k, v in metrics.items()}, step=0)  # earlier values: the last one must win
    logger.log_metrics(metrics, step=1)
    logger.finalize(status)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local root holding the runs of `RUNS` and one run with a hostile name and hostile param values."""
    where = str(tmp_path_factory.mktemp("catalog-root") / "root")
    for name, (config, metrics, status) in RUNS.items():
        log_run(where, name, config, metrics, status)
    log_run(where, HOSTILE_NAME, {"optimizer": "x", **HOSTILE_VALUES}, {"loss": 9.0}, "completed")
    return where


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty catalog: an SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("postgres_url")


def names(frame: Any) -> list[str]:
    return list(frame["name"])


@pytest.mark.parametrize(("filter", "expected"), [
    ("params.lr < 0.01", ["alpha", "delta", "eps"]),  # numbers, not strings: '1e-05' < '0.01' as numbers only
    ("params.batch_size > 64", ["gamma"]),  # as strings '8' > '64'
    ("metrics.loss < 0.1 and params.optimizer = 'adam'", ["alpha"]),
    ("params.optimizer ILIKE 'adam'", ["alpha", "delta", "gamma"]),
    ("params.optimizer LIKE 'A%'", ["delta"]),  # LIKE is case-sensitive on both databases
    ("params.optimizer IN ('sgd', 'rmsprop')", ["beta", "eps"]),
    ("status = 'failed' OR (metrics.loss < 0.1 AND params.optimizer = 'Adam')", ["delta", "gamma"]),
    ("metrics.`val loss` >= 0.3 and attributes.status != 'failed'", ["beta"]),
    ("name = 'alpha' or run_id = 'beta/logs/beta'", ["alpha", "beta"]),
])
def test_filters_select_the_right_runs(root: str, catalog_url: str, filter: str, expected: list[str]) -> None:
    found = search_runs(root, f"({filter}) and params.optimizer != 'x'", order_by="name", catalog=catalog_url)
    assert sorted(names(found)) == sorted(expected)


@pytest.mark.parametrize(("pattern", "selects"), [("100\\% %", True), ("100\\%", False), ("100% \\_done\\_", True), ("100% \\_d", False)])
def test_like_escapes_wildcards_with_a_backslash_on_both_databases(
    root: str, catalog_url: str, pattern: str, selects: bool
) -> None:
    """``\\%`` and ``\\_`` match a literal ``%`` / ``_`` on both databases (SQLite has no escape character by default)."""
    found = search_runs(root, f"params.percent LIKE '{pattern}'", catalog=catalog_url)
    assert names(found) == ([HOSTILE_NAME] if selects else [])


def test_order_by_a_metric_puts_nulls_last_and_max_results_cuts(root: str, catalog_url: str) -> None:
    with open_catalog(catalog_url) as catalog:
        catalog.sync(root)
        ascending = catalog.search(root, "params.optimizer != 'x'", order_by=["metrics.loss"])
        top = catalog.search(root, "params.optimizer != 'x'", order_by=["metrics.loss DESC", "name"], max_results=2)
    assert names(ascending) == ["alpha", "delta", "beta", "gamma", "eps"]
    assert list(ascending["metrics.loss"].iloc[:4]) == [0.05, 0.08, 0.2, 0.5]  # the last value logged
    assert names(top) == ["gamma", "beta"]


def test_hostile_names_and_values_are_stored_and_found_exactly(root: str, catalog_url: str) -> None:
    with open_catalog(catalog_url) as catalog:
        catalog.sync(root)
        found = catalog.search(root, "params.optimizer = 'x'")
        by_like = catalog.search(root, "params.sql LIKE '%DROP TABLE expstore_params%'")
        by_name = catalog.search(root, "name LIKE 'o%brien%DROP TABLE%'")
        everything = catalog.search(root)
    assert names(found) == names(by_like) == names(by_name) == [HOSTILE_NAME]
    row = found.iloc[0]
    for key, value in HOSTILE_VALUES.items():
        assert row[f"params.{key}"] == value
    assert len(everything) == len(RUNS) + 1  # no table was dropped


def test_sync_is_incremental_picks_up_new_runs_and_drops_deleted_ones(tmp_path: Path, catalog_url: str) -> None:
    """A second sync lists once and reads no summary; a new run is read (only it: its summary and its log); a deleted run drops out."""
    root = str(tmp_path / "root")
    for name in ("one", "two"):
        log_run(root, name, {"lr": 0.1}, {"loss": 1.0}, "completed")
    calls: list[tuple[str, tuple[Any, ...]]] = []

    class Counting(DelegatingStore):
        def forward(self, operation: str, *args: Any, **kwargs: Any) -> Any:
            calls.append((operation, args))
            return super().forward(operation, *args, **kwargs)

    with open_catalog(catalog_url) as catalog, open_store(root) as inner:
        store = Counting(inner)
        catalog.sync(store)
        assert sorted(names(catalog.search(root))) == ["one", "two"]
        calls.clear()
        catalog.sync(store)
        assert [op for op, _ in calls if op.startswith("list")] == ["list_versions"]
        assert [args for op, args in calls if op == "read"] == []
        log_run(root, "three", {"lr": 0.2}, {"loss": 0.5}, "completed")
        shutil.rmtree(Path(root) / "one")
        calls.clear()
        catalog.sync(store)
        assert sorted(args[0] for op, args in calls if op == "read") == ["three/logs/three_run.json", "three/logs/three_structured.jsonl"]
        assert sorted(names(catalog.search(root))) == ["three", "two"]


def test_a_dropped_postgresql_catalog_is_rebuilt_by_the_next_search(root: str, postgres_url: str) -> None:
    import psycopg

    before = search_runs(root, order_by="name", catalog=postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        tables = [t for (t,) in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'expstore%'")]
        assert tables
        conn.execute("DROP TABLE " + ", ".join(tables) + " CASCADE")
    after = search_runs(root, order_by="name", catalog=postgres_url)
    assert names(after) == names(before) and len(after) == len(RUNS) + 1
    assert after.equals(before)


def test_roots_sharing_one_catalog_see_only_their_runs(tmp_path: Path, catalog_url: str) -> None:
    first, second = str(tmp_path / "team-a"), str(tmp_path / "team-a-b")  # one is a string prefix of the other
    log_run(first, "mine", {"lr": 1}, {"loss": 1.0}, "completed")
    log_run(second, "theirs", {"lr": 1}, {"loss": 1.0}, "completed")
    with open_catalog(catalog_url) as catalog:
        catalog.sync(first)
        catalog.sync(second)
        assert names(catalog.search(first)) == ["mine"]
        assert names(catalog.search(second)) == ["theirs"]


def _record(i: int, loss: float) -> RunRecord:
    return RunRecord(root="s3://bucket/team", run_id=f"run{i}/logs/run{i}", name=f"run{i}", url=f"s3://bucket/team/run{i}",
                     status="running", start_time=1_700_000_000.0 + i, params={"i": i}, metrics={"loss": loss}, tags={"by": "test"})


def test_many_writers_at_once_upsert_without_loss_or_duplicates(catalog_url: str) -> None:
    """16 threads, each with its own catalog (pool): 8 runs written twice over, concurrently; every run once, the values whole."""
    open_catalog(catalog_url).close()  # tables created once; racing creation is another test's business

    def write(i: int) -> None:
        with open_catalog(catalog_url) as catalog:
            catalog.record_run(_record(i % 8, loss=float(i % 8)))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(16)))
    with open_catalog(catalog_url) as catalog:
        found = catalog.search("s3://bucket/team", order_by="name")
    assert names(found) == [f"run{i}" for i in range(8)]
    assert list(found["metrics.loss"]) == [float(i) for i in range(8)]
    assert list(found["params.i"]) == list(range(8))


def test_an_unreachable_server_is_an_error_naming_it() -> None:
    with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1:1"):
        open_catalog("postgresql://nobody:pw@127.0.0.1:1/x")


def test_a_missing_database_is_an_error_naming_it(postgres_server: PostgresServer) -> None:
    with pytest.raises(BackendUnavailable, match="no_such_db"):
        open_catalog(postgres_server.url("no_such_db"))


def test_postgres_expects_a_param_filter_to_select_its_real_share_of_runs(postgres_url: str) -> None:
    """A third of 900 runs have optimizer 'adam': the planner must expect about that many rows, not the few that
    key and value taken as independent give (with those it probes every run's metrics one by one)."""
    optimizers = ("adam", "sgd", "rmsprop")
    records = [RunRecord(root="s3://bucket/plan", run_id=f"r{i}", name=f"r{i}", url="s3://bucket/plan",
                         params={"optimizer": optimizers[i % 3], **{f"p{k}": f"v{k}-{i % 7}" for k in range(20)}})
               for i in range(900)]
    with open_catalog(postgres_url) as catalog:
        with writing(catalog.engine) as conn:
            upsert_runs(conn, records)
            conn.exec_driver_sql("ANALYZE expstore_params")
        with catalog.engine.connect() as conn:
            plan = conn.exec_driver_sql(
                "EXPLAIN (FORMAT JSON) SELECT run FROM expstore_params WHERE key = 'optimizer' AND value = 'adam'").scalar_one()
    assert 150 <= plan[0]["Plan"]["Plan Rows"] <= 600  # 300 match
