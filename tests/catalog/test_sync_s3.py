"""Incremental sync on S3 (moto over HTTP): a second sync with nothing changed lists once and reads
no summary and no log; a changed, a new and a deleted run cost only their own requests, and their
metric history follows (a running run's segments, then the final log that merged them)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from expstore import open_store
from expstore.catalog import open_catalog
from expstore.catalog.schema import metric_history
from expstore.experiment_logger import ExperimentLogger

from ..conftest import unique
from ..s3servers import S3Server
from ..wrapping import DelegatingStore


class CountingStore(DelegatingStore):
    """Counts the store calls a sync makes, by operation."""

    def __init__(self, inner: Any):
        super().__init__(inner)
        self.calls: Counter[str] = Counter()

    def forward(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        self.calls[operation] += 1
        return super().forward(operation, *args, **kwargs)


def log_run(url: str, options: dict, name: str, loss: float, finalize: bool = True) -> ExperimentLogger:
    logger = ExperimentLogger(name, f"{url}/{name}/logs", log_to_console=False, **options)
    logger.log_config({"lr": loss / 10})
    logger.log_metrics({"loss": loss})
    if finalize:
        logger.finalize()
    else:
        assert logger.flush()
    return logger


def test_sync_reads_only_what_changed(moto_server: S3Server, tmp_path: Path) -> None:
    url, options = f"s3://expstore-test/catalog-{unique()}", moto_server.storage_options
    for i in range(3):
        log_run(url, options, f"run{i}", loss=float(i))
    running = log_run(url, options, "live", loss=9.0, finalize=False)
    store = CountingStore(open_store(url, **options))
    with open_catalog(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        catalog.sync(store)  # type: ignore[arg-type]
        assert store.calls == {"list_versions": 1, "read": 8}  # 4 summaries, 3 final logs, the live run's segment
        assert sorted(catalog.search(store)["name"]) == ["live", "run0", "run1", "run2"]  # type: ignore[arg-type]
        assert list(catalog.metric_history("live/logs/live", root=store)["value"]) == [9.0]

        store.calls.clear()
        catalog.sync(store)  # type: ignore[arg-type]
        assert store.calls == {"list_versions": 1}  # one listing (with the versions), no summary read again

        running.log_metrics({"loss": 4.5})
        running.finalize()
        log_run(url, options, "new", loss=7.0)
        store.inner.delete("run0/logs/run0_run.json")
        store.calls.clear()
        catalog.sync(store)  # type: ignore[arg-type]
        assert store.calls == {"list_versions": 1, "read": 4}  # the finished run and the new one: summary and final log
        frame = catalog.search(store, order_by=["name"])  # type: ignore[arg-type]
        assert list(frame["name"]) == ["live", "new", "run1", "run2"]
        assert frame.set_index("name").loc["live", "status"] == "completed"
        assert frame.set_index("name").loc["live", "metrics.loss"] == 4.5
        history = catalog.metric_history(["live/logs/live", "new/logs/new"], "loss", root=store)  # type: ignore[arg-type]
        assert list(zip(history["run_id"], history["value"], strict=True)) == [
            ("live/logs/live", 9.0), ("live/logs/live", 4.5), ("new/logs/new", 7.0)]
        with catalog.engine.connect() as conn:  # the segment's points went with it: each point is held once
            assert conn.execute(select(func.count()).select_from(metric_history)).scalar_one() == 5
    store.close()
    store.inner.close()
