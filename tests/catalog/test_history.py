"""The metric history the sync fills from the loggers' structured logs, on SQLite and a real PostgreSQL:
an unchanged log is not read again, a log that grew is read from where the last read stopped and its
new points land once, a log rewritten otherwise is read whole, a deleted run takes its history along."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, inspect, select, text

from expstore import open_store
from expstore.backends import local_listing
from expstore.catalog import open_catalog
from expstore.catalog.history import parse_points
from expstore.catalog.schema import history_sources, metric_history
from expstore.experiment_logger import create_experiment_logger

from ..wrapping import DelegatingStore


class Counting(DelegatingStore):
    """Records the (operation, key) of every read the sync makes."""

    def __init__(self, inner: Any):
        super().__init__(inner)
        self.reads: list[tuple[str, str]] = []

    def forward(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        if operation in ("read", "read_range"):
            self.reads.append((operation, args[0]))
        return super().forward(operation, *args, **kwargs)


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    return request.getfixturevalue("postgres_url")


def logger_of(root: Path, name: str) -> Any:
    return create_experiment_logger(name, str(root / name / "logs"), verbose=False, catalog=False)


def stored_points(catalog: Any) -> int:
    """Rows in the history table itself (the DataFrame would hide a point held twice)."""
    with catalog.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(metric_history)).scalar_one()


def test_history_follows_the_logs_incrementally(tmp_path: Path, catalog_url: str) -> None:
    root = tmp_path / "root"
    live = logger_of(root, "live")
    live.log_metrics({"loss": 1.0, "acc": 0.5}, step=0)
    live.log_progress(1, 10, {"loss": 0.9})
    live.log_metrics({"loss": 0.8, "note": "text is not charted", "bad": float("nan")}, step=2)
    assert live.flush()
    done = logger_of(root, "done")
    done.log_metrics({"loss": 3.0}, step=7)
    done.finalize()
    with open_catalog(catalog_url) as catalog, open_store(str(root)) as inner:
        store = Counting(inner)
        catalog.sync(store)
        frame = catalog.metric_history("live/logs/live", root=store)
        assert list(frame.columns) == ["run_id", "key", "step", "timestamp", "value"]
        assert [str(t) for t in frame.dtypes] == ["string", "string", "Int64", "datetime64[ns, UTC]", "float64"]
        assert list(frame["key"]) == ["acc", "bad", "loss", "loss", "loss"]
        assert list(frame["step"]) == [0, 2, 0, 1, 2]  # a progress event's iteration is its step
        assert frame["value"].isna().tolist() == [False, True, False, False, False]
        assert list(frame.loc[frame["key"] == "loss", "value"]) == [1.0, 0.9, 0.8]
        assert stored_points(catalog) == 6

        store.reads.clear()
        catalog.sync(store)
        assert store.reads == []  # nothing changed: no summary and no log read

        live.log_metrics({"loss": 0.1}, step=3)
        live.finalize()
        store.reads.clear()
        catalog.sync(store)
        assert ("read_range", "live/logs/live_structured.jsonl") in store.reads  # only the new bytes
        assert not any(key.startswith("done/") for _, key in store.reads)
        loss = catalog.metric_history("live/logs/live", ["loss"], root=store)
        assert list(loss["value"]) == [1.0, 0.9, 0.8, 0.1]
        assert stored_points(catalog) == 7  # the new point once, the old ones not again
        assert list(catalog.metric_history(str(root / "done/logs/done"))["step"]) == [7]  # by the run's identity

        shutil.rmtree(root / "done")
        catalog.sync(store)
        assert stored_points(catalog) == 6  # the live run's own
        with catalog.engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(history_sources)).scalar_one() == 1
        with pytest.raises(KeyError, match="done/logs/done"):
            catalog.metric_history("done/logs/done", root=store)


def test_a_rewritten_log_is_read_whole_and_replaces_its_points(tmp_path: Path) -> None:
    root = tmp_path / "root"
    logger = logger_of(root, "run")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.finalize()
    log = root / "run/logs/run_structured.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        catalog.sync(str(root))
        assert stored_points(catalog) == 2
        kept = [line for line in lines if json.loads(line).get("data", {}).get("step") != 1]
        log.write_bytes(b"".join(kept) + lines[-1])  # not an append
        catalog.sync(str(root))
        assert list(catalog.metric_history("run/logs/run", root=str(root))["value"]) == [1.0]
        assert stored_points(catalog) == 1


def test_a_log_that_only_grew_after_a_remembered_listing_is_read(
        tmp_path: Path, catalog_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast paths of a sync with nothing changed (the local listing's remembered folders, the catalog's
    remembered digest) must still see a log appended to while its summary and folder names stay the same."""
    monkeypatch.setattr(local_listing, "RECENT_NS", -10**12)  # folders just written count as old: remembered at once
    root = tmp_path / "root"
    logger = logger_of(root, "run")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize()
    with open_catalog(catalog_url) as catalog, open_store(str(root)) as store:
        for _ in range(3):  # a full sync, one that remembers the listing, one that trusts it
            catalog.sync(store)
        summary = store.version("run/logs/run_run.json")
        line = {"timestamp": "2026-12-02T12:00:00+00:00", "event_type": "metrics", "data": {"step": 1, "metrics": {"loss": 0.5}}}
        store.append("run/logs/run_structured.jsonl", json.dumps(line).encode() + b"\n")
        catalog.sync(store)
        assert store.version("run/logs/run_run.json") == summary
        assert list(catalog.metric_history("run/logs/run", root=store)["value"]) == [1.0, 0.5]


def test_a_torn_last_line_waits_for_its_end() -> None:
    line = b'{"timestamp": "2026-01-01T00:00:00+00:00", "event_type": "metrics", "data": {"step": 4, "metrics": {"x": 2}}}\n'
    points, used = parse_points(line + line[:30])
    assert points == [("x", 4, 1767225600.0, 2.0)] and used == len(line)
    assert parse_points(b'not json "metrics"\n' + line) == (points, len(line) + 19)  # a bad line is skipped


def test_metric_history_names_bad_input(tmp_path: Path) -> None:
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        with pytest.raises(TypeError, match="keys must be a str or a list of str"):
            catalog.metric_history("r", keys=5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="run_id must be"):
            catalog.metric_history(None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least one run_id"):
            catalog.metric_history([])
        with pytest.raises(KeyError, match="no run 'nope'"):
            catalog.metric_history("nope")


def test_an_older_empty_history_table_is_recreated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE expstore_metric_history (run INTEGER NOT NULL, key TEXT NOT NULL, "
                          "step INTEGER, timestamp FLOAT NOT NULL, value FLOAT)"))
    engine.dispose()
    with open_catalog(url) as catalog, catalog.engine.connect() as conn:
        assert "source" in {c["name"] for c in inspect(conn).get_columns("expstore_metric_history")}


def test_concurrent_syncs_write_each_point_once(tmp_path: Path, catalog_url: str) -> None:
    """Two syncs of one root at once (each its own engine): the points of a new and of a grown log land once."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path / "root"
    loggers = [logger_of(root, f"run{i}") for i in range(4)]
    for logger in loggers:
        logger.log_metrics({"loss": 1.0}, step=0)
        assert logger.flush()
    with open_catalog(catalog_url) as first, open_catalog(catalog_url) as second:
        first.sync(str(root))
        for logger in loggers:
            logger.log_metrics({"loss": 0.5}, step=1)
            logger.finalize()
        logger_of(root, "late").finalize()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda catalog: catalog.sync(str(root)), [first, second]))
        assert stored_points(first) == 8
        assert list(first.metric_history("run2/logs/run2", root=str(root))["value"]) == [1.0, 0.5]
