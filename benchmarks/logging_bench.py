"""ExperimentLogger throughput: `log_metrics` events/s against a bare json.dumps + file.write loop.

What it measures, for `--events` calls of ``log_metrics({"loss", "accuracy", "learning_rate"}, step=i)``
with file logging on and console output off:

- local, calls: the time the training loop spends in the calls (the flusher thread formats and
  writes in the background, sharing the GIL);
- local, end to end: the calls plus `finalize()`, i.e. until every JSONL and `.log` line is on disk;
- baseline: a bare loop that builds the same JSONL event (``{"timestamp": <ISO now>, "event_type":
  "metrics", "data": {...}}``), `json.dumps` it and writes it to an open file (no `.log` line at all);
- S3 (moto, started here on 127.0.0.1), end to end: events/s until `finalize()` returned, and the
  number of PUTs the store received (counted by a wrapper store), for the default flush policy.

Each local pair runs interleaved (expstore, baseline, baseline, expstore, ...) after one untimed
warm-up round. ratio = baseline events/s / expstore events/s (so 1.00 = as fast as the bare loop,
1.20 = expstore takes 20 % longer). Targets: >= 150,000 events/s and ratio <= 1.2.

    python benchmarks/logging_bench.py                  # 100,000 events, 5 repeats
    python benchmarks/logging_bench.py --events 20000 --repeat 3 --no-s3
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from benchlib import machine, run, scratch_folder

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from expstore import Store, open_store  # noqa: E402
from expstore.experiment_logger import ExperimentLogger  # noqa: E402
from tests import s3servers  # noqa: E402

TARGET_EVENTS_S = 150_000
TARGET_RATIO = 1.2
PACKAGES = ("numpy", "botocore", "expstore")


def metrics(i: int, n: int) -> dict[str, float]:
    return {"loss": 1.0 / (i + 1), "accuracy": i / n, "learning_rate": 1e-3}


class CountingStore(Store):
    """Passes every call to another store and counts the writes (PUTs on S3)."""

    def __init__(self, inner: Store):
        super().__init__(inner.url)
        self.inner, self.supports_append, self.writes = inner, inner.supports_append, 0

    def _write(self, key: str, data: Any, if_absent: bool, if_match: str | None) -> str:
        self.writes += 1
        return self.inner.write(key, data)

    def _read(self, key: str) -> bytes:
        return self.inner.read(key)

    def _delete(self, key: str) -> None:
        self.inner.delete(key)

    def _size(self, key: str) -> int:
        return self.inner.size(key)

    def _list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)


def run_logger(output: Any, n: int) -> tuple[float, float]:
    """(seconds in the calls, seconds until finalize returned) for `n` log_metrics calls."""
    logger = ExperimentLogger("bench", output, log_to_console=False)
    start = time.perf_counter()
    for i in range(n):
        logger.log_metrics(metrics(i, n), step=i)
    calls = time.perf_counter() - start
    logger.finalize()
    return calls, time.perf_counter() - start


def run_bare(path: Path, n: int) -> float:
    """Seconds for the bare loop: build the event, json.dumps, file.write."""
    start = time.perf_counter()
    with open(path, "w") as f:
        for i in range(n):
            event = {"timestamp": datetime.now().astimezone().isoformat(), "event_type": "metrics",
                     "data": {"step": i, "metrics": metrics(i, n)}}
            f.write(json.dumps(event) + "\n")
    return time.perf_counter() - start


def local_times(folder: Path, n: int, repeat: int) -> tuple[list[float], list[float], list[float]]:
    """Interleaved rounds after a warm-up: (calls, end to end, bare) seconds per timed round."""
    calls: list[float] = []
    e2e: list[float] = []
    bare: list[float] = []

    def expstore_round(keep: bool, r: int) -> None:
        c, e = run_logger(folder / f"logs-{r}", n)
        if keep:
            calls.append(c)
            e2e.append(e)

    def bare_round(keep: bool, r: int) -> None:
        b = run_bare(folder / f"bare-{r}.jsonl", n)
        if keep:
            bare.append(b)

    expstore_round(False, -1)
    bare_round(False, -1)
    for r in range(repeat):
        order: list[Callable[[bool, int], None]] = [expstore_round, bare_round] if r % 2 == 0 else [bare_round, expstore_round]
        for op in order:
            op(True, r)
    return calls, e2e, bare


def s3_row(n: int) -> tuple[float, int]:
    """(end-to-end seconds, PUTs) of `n` events to moto with the default flush policy."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = s3servers.start_moto()
    try:
        store = CountingStore(open_store("s3://expstore-bench/logs", **server.storage_options))
        _, seconds = run_logger(store, n)
        return seconds, store.writes
    finally:
        server.stop()


def render(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="log_metrics calls per round (default 100,000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--dir", type=Path, help="folder on the disk to measure (default ./.bench-tmp)")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 (moto) row")
    args = parser.parse_args(argv)
    n = args.events
    with scratch_folder(args.dir, "logging-bench-") as folder:
        calls, e2e, bare = local_times(folder, n, args.repeat)
    rate = {name: n / statistics.median(t) for name, t in (("calls", calls), ("e2e", e2e), ("bare", bare))}
    best = {name: n / min(t) for name, t in (("calls", calls), ("e2e", e2e), ("bare", bare))}

    def row(op: str, key: str) -> list[str]:
        ratio = rate["bare"] / rate[key]
        ok = rate[key] >= TARGET_EVENTS_S and ratio <= TARGET_RATIO
        return [op, f"{rate[key]:,.0f} ({best[key]:,.0f})", f"{rate['bare']:,.0f}", f"{ratio:.2f}",
                f">= {TARGET_EVENTS_S:,}/s, <= {TARGET_RATIO}", "ok" if ok else "NO"]

    rows = [
        ["operation", "events/s median (best)", "bare loop events/s", "ratio (expstore t / bare t)", "target", "ok?"],
        row("local: log_metrics calls", "calls"),
        row("local: calls + finalize (all on disk)", "e2e"),
    ]
    if not args.no_s3:
        seconds, puts = s3_row(n)
        rows.append([f"s3 (moto): calls + finalize, {puts} PUTs", f"{n / seconds:,.0f}", "-", "-",
                     f"<= {max(1, n // 1000)} PUTs", "ok" if puts <= max(1, n // 1000) else "NO"])
    print(render(rows))
    print()
    print(f"note: {n:,} events per round; median of {args.repeat} interleaved rounds, best in parentheses")
    print("note: bare loop = build the event dict with datetime.now().astimezone().isoformat(), json.dumps, file.write "
          "(JSONL only); expstore also writes the human .log line of every event")
    print("note: moto runs in this process (ThreadedMotoServer): server, client and flusher share the GIL")
    print(f"machine: {machine(PACKAGES)}")
    print(f"command: {shlex.join(sys.orig_argv)}")
    return 0


if __name__ == "__main__":
    run(main, "interrupted: local files removed, S3 server stopped")
