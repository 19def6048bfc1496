"""Loggers push their runs to a real PostgreSQL catalog: in the background, never blocking or failing
training on a dead database, and without losing a run when 8 processes finish at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from expstore.catalog import open_catalog, search_runs
from expstore.experiment_logger import create_experiment_logger
from expstore.experiment_logger.catalog_push import catalog_url, redact

from ..workers import REPO_ROOT
from ..workers.catalog_workers import final_loss

DEAD = "postgresql://trainer:s3cret@127.0.0.1:1/x"  # nothing listens on port 1: connection refused


def test_a_pushed_run_is_in_the_catalog_before_any_sync(tmp_path: Path, postgres_url: str) -> None:
    """Params, last metrics and the final status reach the catalog by the push alone (no sync)."""
    root = str(tmp_path / "root")
    logger = create_experiment_logger("pushed", f"{root}/r1/logs", verbose=False, catalog=postgres_url, flush_interval=0.1)
    logger.log_config({"optimizer": {"name": "adam", "lr": 0.01}, "seed": 3})
    logger.log_metrics({"loss": 0.75, "label": "not a number"}, step=1)
    logger.log_progress(2, 10, {"loss": 0.5})
    logger.finalize("completed")
    with open_catalog(postgres_url) as catalog:
        found = catalog.search(root)  # search alone never syncs
    assert list(found["name"]) == ["pushed"]
    row = found.iloc[0]
    assert row["status"] == "completed"
    assert row["params.optimizer.name"] == "adam" and row["params.optimizer.lr"] == 0.01
    assert row["metrics.loss"] == 0.5
    assert "metrics.label" not in found.columns  # a str metric is not a number: the catalog keeps numbers
    assert row["tags.host"]


def test_push_and_sync_agree_on_one_row(tmp_path: Path, postgres_url: str) -> None:
    """The run a logger pushed and the same run found by a sync of a root above it are one row, the same values."""
    root = str(tmp_path / "root")
    with create_experiment_logger("same", f"{root}/a/logs", verbose=False, catalog=postgres_url) as logger:
        logger.log_config({"lr": 0.1})
        logger.log_metrics({"loss": 0.25})
    with open_catalog(postgres_url) as catalog:
        pushed = catalog.search(root)
        catalog.sync(root)
        synced = catalog.search(root)
    assert len(synced) == 1
    columns = ["run_id", "name", "url", "status", "params.lr", "metrics.loss", "tags.host", "duration_seconds"]
    assert pushed[columns].to_dict("records") == synced[columns].to_dict("records")


def test_expstore_catalog_variable_makes_loggers_push(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPSTORE_CATALOG", postgres_url)
    root = str(tmp_path / "root")
    with create_experiment_logger("from_env", f"{root}/logs", verbose=False) as logger:
        logger.log_metrics({"loss": 1.5})
    with open_catalog(postgres_url) as catalog:
        assert list(catalog.search(root, "metrics.loss = 1.5")["name"]) == ["from_env"]


def test_catalog_false_opts_out_of_the_variable(tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXPSTORE_CATALOG", postgres_url)
    root = str(tmp_path / "root")
    with create_experiment_logger("private", f"{root}/logs", verbose=False, catalog=False) as logger:
        logger.log_metrics({"loss": 1.5})
    with open_catalog(postgres_url) as catalog:
        assert catalog.search(root).empty


def test_a_dead_catalog_never_fails_training_and_warns_once_naming_it(tmp_path: Path) -> None:
    """Connection refused: the log calls and finalize return, one warning names the URL (password hidden),
    and the store holds the whole run, so a later search finds it."""
    root = str(tmp_path / "root")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logger = create_experiment_logger("offline", f"{root}/logs", verbose=False, catalog=DEAD, flush_interval=0.05)
        logger.log_config({"lr": 0.5})
        for step in range(200):
            logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        summary = logger.finalize("completed")
    assert summary["final_status"] == "completed" and summary["events_lost"] == 0
    pushes = [w for w in caught if "catalog" in str(w.message)]
    assert len(pushes) == 1, [str(w.message) for w in pushes]
    message = str(pushes[0].message)
    assert redact(DEAD) in message and "s3cret" not in message
    found = search_runs(root, catalog=f"sqlite:///{tmp_path / 'local.db'}")
    assert list(found["status"]) == ["completed"] and found["metrics.loss"].iloc[0] == pytest.approx(1 / 200)


def test_a_catalog_that_never_answers_does_not_hold_finalize(tmp_path: Path) -> None:
    """A server that takes the connection and never answers: finalize gives the push up after its timeout,
    one warning names the URL, and the store has the run."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
        url = f"postgresql://trainer@127.0.0.1:{silent.getsockname()[1]}/x"
        root = str(tmp_path / "root")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logger = create_experiment_logger("stalled", f"{root}/logs", verbose=False, catalog=url, flush_interval=0.05)
            logger.log_metrics({"loss": 0.5})
            summary = logger.finalize("completed")
    assert summary["final_status"] == "completed"
    messages = [str(w.message) for w in caught if "catalog" in str(w.message)]
    assert len(messages) == 1 and url in messages[0], messages  # "failed" or "did not reach", whichever came first
    assert list(search_runs(root, catalog=f"sqlite:///{tmp_path / 'local.db'}")["status"]) == ["completed"]


def test_bad_catalog_argument_names_it_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="catalog must be a catalog URL"):
        create_experiment_logger("bad", str(tmp_path / "logs"), verbose=False, catalog=5432)
    with pytest.raises(ValueError, match="'localhost:5432'"):
        create_experiment_logger("bad", str(tmp_path / "logs"), verbose=False, catalog="localhost:5432")
    assert not (tmp_path / "logs").exists()
    assert catalog_url(False) is None


def test_logging_without_a_catalog_imports_no_sqlalchemy(tmp_path: Path) -> None:
    code = (
        "import sys, os; os.environ.pop('EXPSTORE_CATALOG', None)\n"
        "from expstore.experiment_logger import create_experiment_logger\n"
        f"lg = create_experiment_logger('x', {str(tmp_path)!r}, verbose=False)\n"
        "lg.log_config({'a': 1}); lg.log_metrics({'loss': 1.0}); lg.finalize()\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_eight_processes_finishing_at_once_lose_no_run(tmp_path: Path, postgres_url: str) -> None:
    """8 loggers in 8 processes finalize at the same moment into one PostgreSQL: every run is there by push,
    with its final status and last metrics, and a search that syncs finds the same 8."""
    root, go = str(tmp_path / "root"), tmp_path / "go"
    names = [f"worker_{i}" for i in range(8)]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop("EXPSTORE_CATALOG", None)
    workers = [subprocess.Popen([sys.executable, "-m", "tests.workers.catalog_workers", root, name, postgres_url, str(go)],
                                cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name in names]
    try:
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready", worker.stderr.read()
        go.touch()
        for worker in workers:
            out, err = worker.communicate(timeout=120)
            assert worker.returncode == 0 and out.strip() == "done", err
            assert "catalog" not in err, err  # no push failed
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    with open_catalog(postgres_url) as catalog:
        pushed = catalog.search(root, order_by="name")
    assert list(pushed["name"]) == names
    assert set(pushed["status"]) == {"completed"}
    assert list(pushed["metrics.loss"]) == [final_loss(i) for i in range(8)]
    assert list(pushed["params.worker"]) == names
    synced = search_runs(root, "status = 'completed' and metrics.loss <= 0.5", order_by="metrics.loss DESC", catalog=postgres_url)
    assert list(synced["name"]) == names[1:]
