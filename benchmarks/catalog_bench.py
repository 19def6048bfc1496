"""Run-catalog benchmark (issue 18's table): sync and search over 10,000 runs, SQLite and PostgreSQL, and
the same search on MLflow's SQLite backend.

    python benchmarks/catalog_bench.py            # 10,000 runs x 30 params x 10 metrics
    python benchmarks/catalog_bench.py --quick    # 500 runs: a smoke run

The runs are written as the run-summary objects a logger writes (``<run>/logs/<run>_run.json``, the
same document `ExperimentLogger` produces), straight to files under a local root: going through
10,000 loggers would only time the logger. Figures:

* first sync of every run into an empty catalog, each in a fresh child process, median of
  ``--first-syncs`` (3) interleaved between SQLite and PostgreSQL after one warm-up read of every file
  under the root, which is also timed as the raw limit;
* a sync with nothing changed: a second sync in one process (median of repeated calls, with the number
  of summary objects it read, which must be 0), and the same in a fresh process, which has not
  listed the root yet;
* a 3-clause filter (``params.optimizer = 'adam' and metrics.loss < 0.5 and metrics.acc > 0.65``)
  ordered by ``metrics.loss``, 100 results: `Catalog.search` (the query alone) and `search_runs`
  (incremental sync + query, what a user calls), median of repeated calls after one warm-up;
* MLflow: the same runs logged with `MlflowClient` into its SQLite backend, then the same
  `mlflow.search_runs`, each call right after one of ours (the ratio compares calls made at the same
  hour of this shared host). MLflow runs in its own virtualenv (``--mlflow-python``, default
  /work/venv-mlflow/bin/python) in a child process of this script (``--mlflow-side``), which stays up
  and times one search per request; its database
  is kept in the work folder and reused by later runs of the same size, since logging 10,000 runs
  through its client takes many minutes. Without that interpreter the MLflow rows are skipped.

PostgreSQL: ``--postgres URL``, else a throwaway server started like the tests do (tests/pgserver.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
FILTER = "params.optimizer = 'adam' and metrics.loss < 0.5 and metrics.acc > 0.65"
ORDER_BY = ["metrics.loss ASC"]
MAX_RESULTS = 100
N_PARAMS, N_METRICS = 30, 10
GENERATOR_VERSION = 1  # bump when `make_run` changes: cached MLflow databases are keyed by it
ROOT_VERSION = 2  # bump when what `write_root` writes changes: cached roots are keyed by it
HISTORY_STEPS = 10  # "metrics" events in each run's structured log, each with the run's 10 metrics
START = 1_767_225_600  # 2026-01-01T00:00:00Z, the first run's start time


def make_run(i: int) -> dict[str, Any]:
    """Run number `i`: its name, 30 params (3 named, 27 mixed ints / strings), 10 metrics, status and times."""
    params: dict[str, Any] = {
        "optimizer": ("adam", "sgd", "rmsprop")[i % 3],
        "lr": round(10 ** -(1 + (i * 7) % 40 / 10), 8),
        "batch_size": (16, 32, 64, 128)[i % 4],
    }
    for k in range(3, N_PARAMS):
        params[f"p{k:02d}"] = (i * k) % 17 if k % 2 == 0 else f"value_{(i * k) % 11}"
    metrics = {"loss": (i * 7919) % 10000 / 10000, "acc": (i * 104723) % 1000 / 1000}
    for k in range(2, N_METRICS):
        metrics[f"m{k:02d}"] = (i * (k + 13) * 104729) % 1000 / 1000
    start = START + i
    duration = 60.0 + i % 300
    return {"name": f"run_{i:05d}", "params": params, "metrics": metrics,
            "status": "failed" if i % 10 == 9 else "completed", "start": start, "duration": duration}


def expected_hits(runs: int) -> list[str]:
    """The names the benchmark's filter and order select, computed in Python (a check of both engines)."""
    rows = [make_run(i) for i in range(runs)]
    hits = [r for r in rows if r["params"]["optimizer"] == "adam" and r["metrics"]["loss"] < 0.5 and r["metrics"]["acc"] > 0.65]
    return [r["name"] for r in sorted(hits, key=lambda r: (r["metrics"]["loss"], r["name"]))][:MAX_RESULTS]


def _iso(seconds: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat()


def summary_bytes(run: dict[str, Any]) -> bytes:
    """The run-summary document an `ExperimentLogger` writes at `finalize`, for `run`."""
    from expstore.format.run_summary import FORMAT

    doc = {
        "format": FORMAT, "experiment_name": run["name"], "rank": None, "status": run["status"],
        "start_time": _iso(run["start"]), "end_time": _iso(run["start"] + run["duration"]),
        "duration_seconds": run["duration"], "session": f"bench-{run['name']}",
        "params": run["params"], "tags": {"host": "bench-host"},
        "final_metrics": run["metrics"],
        "heartbeat_time": _iso(run["start"] + run["duration"]), "heartbeat_seconds": 60.0,
    }
    return (json.dumps(doc) + "\n").encode()


def log_bytes(run: dict[str, Any], steps: int) -> bytes:
    """The structured log of `run`: start, `steps` "metrics" events (the last one with the final metrics), end."""
    def line(seconds: float, kind: str, data: dict[str, Any]) -> str:
        return json.dumps({"timestamp": _iso(seconds), "event_type": kind, "data": data}) + "\n"

    every = run["duration"] / (steps + 1)
    lines = [line(run["start"], "experiment_start", {"experiment_name": run["name"]})]
    for step in range(steps):
        scale = 1.0 + (steps - 1 - step) / steps  # falling towards the final values
        metrics = {k: round(v * scale, 6) for k, v in run["metrics"].items()}
        lines.append(line(run["start"] + every * (step + 1), "metrics", {"step": step, "metrics": metrics}))
    lines.append(line(run["start"] + run["duration"], "experiment_end", {"final_status": run["status"]}))
    return "".join(lines).encode()


def write_root(root: Path, runs: int, steps: int) -> None:
    """Write the summary object and the structured log of each run under `root` (plain file writes: setup, not timed)."""
    for i in range(runs):
        run = make_run(i)
        folder = root / run["name"] / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{run['name']}_run.json").write_bytes(summary_bytes(run))
        if steps:
            (folder / f"{run['name']}_structured.jsonl").write_bytes(log_bytes(run, steps))


def timed(fn: Any, repeat: int = 1) -> tuple[float, Any]:
    """(median seconds over `repeat` calls, last result)."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


# ---- MLflow side: runs in MLflow's own virtualenv, imports nothing of expstore ------------------------


def mlflow_side(runs: int, workdir: Path) -> None:
    """Log the runs into MLflow's SQLite backend with its client (or reuse that database); print what the search
    selects, then time one search for each ``search`` line read from stdin."""
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    db = workdir / f"mlflow-{runs}-v{GENERATOR_VERSION}.db"
    done = db.with_suffix(".done")
    if not done.exists():
        db.unlink(missing_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    client = MlflowClient()
    log_seconds = None
    if not done.exists():
        t0 = time.perf_counter()
        experiment = client.create_experiment("catalog-bench")
        for i in range(runs):
            run = make_run(i)
            info = client.create_run(experiment, start_time=int(run["start"] * 1000), tags={"mlflow.runName": run["name"]}).info
            ms = int((run["start"] + run["duration"]) * 1000)
            client.log_batch(info.run_id, metrics=[Metric(k, v, ms, 0) for k, v in run["metrics"].items()],
                             params=[Param(k, str(v)) for k, v in run["params"].items()])
            client.set_terminated(info.run_id, "FAILED" if run["status"] == "failed" else "FINISHED", end_time=ms)
        log_seconds = time.perf_counter() - t0
        done.write_text(experiment)
    experiment = done.read_text()

    def search() -> Any:
        return mlflow.search_runs([experiment], FILTER, order_by=ORDER_BY, max_results=MAX_RESULTS)

    search()  # warm-up: connection, metadata
    names = list(search()["tags.mlflow.runName"])
    print(json.dumps({"log_seconds": log_seconds, "names": names, "version": mlflow.__version__}), flush=True)
    for line in sys.stdin:  # one timed search per request, so that the parent interleaves them with its own
        if line.strip() != "search":
            break
        print(json.dumps(timed(search)[0]), flush=True)


class MlflowSide:
    """`mlflow_side` in MLflow's interpreter, kept running: `search()` times one of its searches now."""

    def __init__(self, python: str, runs: int, workdir: Path):
        args = [python, str(Path(__file__).resolve()), "--mlflow-side", "--runs", str(runs), "--workdir", str(workdir)]
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, cwd=workdir)
        self.info = json.loads(self._answer())

    def _answer(self) -> str:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"the MLflow side stopped ({self.process.wait()}):\n{self.process.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        return line

    def search(self) -> float:
        self.process.stdin.write("search\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self._answer())

    def close(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(timeout=60)


def start_mlflow(python: str, runs: int, workdir: Path) -> MlflowSide | None:
    """The MLflow side, ready to search; None (and a note on stderr) when its interpreter is missing or it fails."""
    if not Path(python).exists():
        print(f"MLflow rows skipped: no interpreter at {python} (python3 -m venv ... && pip install mlflow)", file=sys.stderr)
        return None
    try:
        return MlflowSide(python, runs, workdir)
    except RuntimeError as exc:
        print(f"MLflow rows skipped: {exc}", file=sys.stderr)
        return None


# ---- expstore side ------------------------------------------------------------------------------------


def _counting_store(root: Path) -> Any:
    """The root as a store that counts the summary objects read through it."""
    sys.path.insert(0, str(REPO_ROOT))
    from expstore import open_store
    from tests.wrapping import DelegatingStore

    class Counting(DelegatingStore):
        reads = 0

        def forward(self, operation: str, *args: Any, **kwargs: Any) -> Any:
            if operation in ("read", "read_range"):
                Counting.reads += 1
            return super().forward(operation, *args, **kwargs)

    return Counting(open_store(str(root)))


def sync_side(catalog_url: str, root: Path, count_reads: bool) -> dict[str, Any]:
    """One sync of `root` into the catalog, timed in this fresh process (nothing of the root remembered yet);
    with `count_reads`, through a store that counts the objects read."""
    from expstore.catalog import open_catalog

    store = _counting_store(root) if count_reads else str(root)
    with open_catalog(catalog_url) as catalog:
        seconds, _ = timed(lambda: catalog.sync(store))
    return {"seconds": seconds, "reads": store.reads if count_reads else None}


def run_sync_side(catalog_url: str, root: Path, count_reads: bool = False) -> dict[str, Any]:
    """`sync_side` in a child process of this interpreter."""
    args = [sys.executable, str(Path(__file__).resolve()), "--sync-side", catalog_url, "--root", str(root),
            *(["--count-reads"] if count_reads else [])]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_every_file(root: Path) -> int:
    """Read every file under `root` once with plain Python (the raw limit of what a first sync reads); bytes read."""
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb", buffering=0) as f:
                total += len(f.read())
    return total


def _emptied(catalog_url: str) -> str:
    """`catalog_url` with its catalog emptied: the SQLite file deleted, or the tables of PostgreSQL's dropped."""
    if catalog_url.startswith("sqlite:///"):
        path = Path(catalog_url.removeprefix("sqlite:///"))
        for leftover in path.parent.glob(f"{path.name}*"):
            leftover.unlink()
        return catalog_url
    from expstore.catalog import open_catalog
    from expstore.catalog.schema import metadata

    with open_catalog(catalog_url) as catalog:
        metadata.drop_all(catalog.engine)
    return catalog_url


def first_syncs(urls: dict[str, str], root: Path, repeat: int) -> dict[str, Any]:
    """Median seconds of a first sync into each emptied catalog and of a no-change sync in a fresh process, each in
    its own child process, interleaved between the catalogs; and of reading every file under the root once."""
    read_every_file(root)  # warm-up: the root in the page cache, as the catalogs will find it
    raw, first, fresh = [], {name: [] for name in urls}, {name: [] for name in urls}  # type: ignore[var-annotated]
    for _ in range(repeat):
        raw.append(timed(lambda: read_every_file(root))[0])
        for name, url in urls.items():
            first[name].append(run_sync_side(_emptied(url), root)["seconds"])
        for name, url in urls.items():
            done = run_sync_side(url, root, count_reads=True)
            if done["reads"]:
                raise SystemExit(f"{url}: a sync with nothing changed, in a fresh process, read {done['reads']} objects")
            fresh[name].append(done["seconds"])
    return {"raw_read": statistics.median(raw),
            **{name: {"first_sync": statistics.median(first[name]), "fresh_nochange": statistics.median(fresh[name])}
               for name in urls}}


def measure(catalog_url: str, root: Path, runs: int, steps: int, repeat: int, mlflow: MlflowSide | None) -> dict[str, Any]:
    """On a catalog that holds the root: no-change sync (time and objects read), search alone (each call followed
    by one of MLflow's), `search_runs` and one run's `metric_history`."""
    from sqlalchemy import func, select

    from expstore.catalog import open_catalog, search_runs
    from expstore.catalog.schema import metric_history

    with open_catalog(catalog_url) as catalog:
        catalog.sync(str(root))  # warm-up: this process lists the root once
        again, _ = timed(lambda: catalog.sync(str(root)), repeat)
        counting = _counting_store(root)
        catalog.sync(counting)
        catalog.search(str(root), FILTER, ORDER_BY, MAX_RESULTS)  # warm-up
        ours, theirs = [], []
        for _ in range(repeat):
            seconds, frame = timed(lambda: catalog.search(str(root), FILTER, ORDER_BY, MAX_RESULTS))
            ours.append(seconds)
            if mlflow is not None:
                theirs.append(mlflow.search())
        full, _ = timed(lambda: search_runs(str(root), FILTER, ORDER_BY, MAX_RESULTS, catalog=catalog), repeat)
        total = len(catalog.search(str(root)))
        chart, points = timed(lambda: catalog.metric_history("run_00042/logs/run_00042", root=str(root)), repeat)
        with catalog.engine.connect() as conn:
            held = conn.execute(select(func.count()).select_from(metric_history)).scalar_one()
    if list(frame["name"]) != expected_hits(runs) or total != runs:
        raise SystemExit(f"{catalog_url}: the search did not select the expected runs ({total} runs catalogued)")
    if held != runs * steps * N_METRICS or len(points) != steps * N_METRICS:
        raise SystemExit(f"{catalog_url}: {held} history points held, {len(points)} for one run; "
                         f"expected {steps * N_METRICS} per run")
    return {"nochange_sync": again, "nochange_reads": counting.reads, "search": statistics.median(ours),
            "mlflow_search": statistics.median(theirs) if theirs else None, "search_runs": full, "history": chart, "points": held}


def expstore_side(runs: int, args: argparse.Namespace) -> dict[str, Any]:
    """Write the root once (kept for later runs of the same size), then measure SQLite and PostgreSQL."""
    root = args.workdir / f"root-{runs}-h{args.history_steps}-v{GENERATOR_VERSION}r{ROOT_VERSION}"
    marker = root.with_suffix(".done")
    written = None
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        written, _ = timed(lambda: write_root(root, runs, args.history_steps))
        marker.touch()
    server = None
    try:
        urls = {"sqlite": f"sqlite:///{args.workdir / f'catalog-{runs}.sqlite'}", "postgresql": args.postgres}
        if args.postgres is None:
            sys.path.insert(0, str(REPO_ROOT))
            from tests.pgserver import start_postgres

            server = start_postgres()
            urls["postgresql"] = server.create_database("bench")
        results: dict[str, Any] = {"written": written, **first_syncs(urls, root, args.first_syncs)}
        mlflow = start_mlflow(args.mlflow_python, runs, args.workdir)
        results["mlflow"] = None if mlflow is None else mlflow.info
        for name, url in urls.items():
            results[name].update(measure(url, root, runs, args.history_steps, args.repeat, mlflow))
        if mlflow is not None:
            mlflow.close()
    finally:
        if server is not None:
            server.stop()
    return results


def report(ours: dict[str, Any], runs: int, steps: int) -> None:
    """Print the table: each figure on SQLite and PostgreSQL, and its target."""
    sq, pg = ours["sqlite"], ours["postgresql"]

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"

    rows = [
        (f"first sync of {runs:,} runs", ms(sq["first_sync"]), ms(pg["first_sync"]), "<= 10 s"),
        ("  reading every summary and log once (the raw limit) / first sync",
         f"{ours['raw_read'] / sq['first_sync']:.3f}", f"{ours['raw_read'] / pg['first_sync']:.3f}", ""),
        ("sync with nothing changed (a second sync)", ms(sq["nochange_sync"]), ms(pg["nochange_sync"]), "<= 0.2 s"),
        ("  the same in a fresh process (nothing remembered)", ms(sq["fresh_nochange"]), ms(pg["fresh_nochange"]), ""),
        ("  summaries and logs read by it", str(sq["nochange_reads"]), str(pg["nochange_reads"]), "0"),
        (f"  (history points the first sync wrote: {sq['points']:,})", "", "", ""),
        ("3-clause search, order by a metric, 100 results (query)", ms(sq["search"]), ms(pg["search"]), "<= 50 ms"),
        ("  the same through search_runs (sync + query)", ms(sq["search_runs"]), ms(pg["search_runs"]), ""),
        ("metric_history of one run (all its points)", ms(sq["history"]), ms(pg["history"]), ""),
    ]
    mlflow = ours["mlflow"]
    if mlflow is not None:
        if mlflow["names"] != expected_hits(runs):
            print("note: mlflow.search_runs selected other runs than expected", file=sys.stderr)
        rows += [
            (f"mlflow.search_runs (MLflow {mlflow['version']}, SQLite), timed between ours", ms(sq["mlflow_search"]),
             ms(pg["mlflow_search"]), ""),
            ("  our query / mlflow.search_runs", f"{sq['search'] / sq['mlflow_search']:.3f}",
             f"{pg['search'] / pg['mlflow_search']:.3f}", "<= 0.1"),
            ("  our search_runs / mlflow.search_runs", f"{sq['search_runs'] / sq['mlflow_search']:.3f}",
             f"{pg['search_runs'] / pg['mlflow_search']:.3f}", ""),
        ]
        if mlflow["log_seconds"] is not None:
            rows.append((f"  (logging the {runs:,} runs into MLflow with its client)", ms(mlflow["log_seconds"]), "", ""))
    else:
        rows.append(("mlflow.search_runs", "skipped (see stderr)", "", "<= 0.1"))
    if ours["written"] is not None:
        rows.append((f"  (writing the {runs:,} summary objects, setup)", ms(ours["written"]), "", ""))
    print(f"filter: {FILTER!r}  order_by={ORDER_BY}  max_results={MAX_RESULTS}  (median of the repeated calls)")
    print(f"reading every file under the root once: {ms(ours['raw_read'])}")
    print(f"each run: {N_PARAMS} params, {N_METRICS} metrics, a structured log of {steps} metric events")
    print("| figure | SQLite | PostgreSQL | target |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 runs instead of 10,000")
    parser.add_argument("--runs", type=int, default=None, help="how many runs (default 10,000; 500 with --quick)")
    parser.add_argument("--repeat", type=int, default=7, help="searches timed per figure (the median is shown)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "expstore-catalog-bench",
                        help="where the root, the catalogs and the cached MLflow database live")
    parser.add_argument("--history-steps", type=int, default=HISTORY_STEPS,
                        help="metric events per run's structured log (0: summaries only, no history)")
    parser.add_argument("--first-syncs", type=int, default=3, help="first syncs timed per catalog (the median is shown)")
    parser.add_argument("--postgres", default=None, help="a PostgreSQL catalog URL (default: start a throwaway server)")
    parser.add_argument("--mlflow-python", default="/work/venv-mlflow/bin/python", help="an interpreter that has mlflow")
    parser.add_argument("--mlflow-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sync-side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--count-reads", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    runs = args.runs or (500 if args.quick else 10_000)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # `finally` stops the PostgreSQL server
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.mlflow_side:
        mlflow_side(runs, args.workdir)
        return
    if args.sync_side:
        print(json.dumps(sync_side(args.sync_side, args.root, args.count_reads)))
        return
    report(expstore_side(runs, args), runs, args.history_steps)


if __name__ == "__main__":
    main()
