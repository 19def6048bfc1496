"""ExperimentLogger throughput: `log_metrics` events/s end to end, against bare json / orjson + file.write loops.

What it measures, for `--events` calls of ``log_metrics({"loss", "accuracy", "learning_rate"}, step=i)``
with file logging on and console output off:

- local, end to end (printed first): creating the logger, the calls and `finalize()`, i.e. until
  every JSONL and `.log` line is on disk;
- local, calls: the time the training loop spends in the calls (the flusher thread formats and
  writes in the background, sharing the GIL);
- baselines: bare loops that build the same JSONL event (``{"timestamp": <ISO now>, "event_type":
  "metrics", "data": {...}}``), encode it with `json.dumps` (stdlib) or `orjson.dumps` and write it
  to an open file (no `.log` line at all);
- S3 (moto, started here on 127.0.0.1), end to end: events/s until `finalize()` returned, and the
  number of PUTs the store received (counted by a wrapper store), for the default flush policy.

The three local contenders run interleaved (the order rotates each round) after one untimed
warm-up round; figures are medians. ratio = baseline events/s / expstore events/s (so 1.00 = as
fast as the bare loop, 1.20 = expstore takes 20 % longer). Targets: >= 150,000 events/s end to end
and a ratio <= 1.0 to the bare stdlib loop.

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

import orjson
from benchlib import machine, run, scratch_folder

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from expstore import Store, open_store  # noqa: E402
from expstore.experiment_logger import ExperimentLogger  # noqa: E402
from tests import s3servers  # noqa: E402

TARGET_EVENTS_S = 150_000
TARGET_RATIO = 1.0
PACKAGES = ("numpy", "orjson", "botocore", "expstore")


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
    """(seconds in the calls, seconds from creating the logger until finalize returned) for `n` log_metrics calls."""
    start = time.perf_counter()
    logger = ExperimentLogger("bench", output, log_to_console=False)
    calls_start = time.perf_counter()
    for i in range(n):
        logger.log_metrics(metrics(i, n), step=i)
    calls = time.perf_counter() - calls_start
    logger.finalize()
    return calls, time.perf_counter() - start


def run_bare(path: Path, n: int, dumps: Callable[[Any], str]) -> float:
    """Seconds for a bare loop: build the event, encode it with `dumps`, file.write."""
    start = time.perf_counter()
    with open(path, "w") as f:
        for i in range(n):
            event = {"timestamp": datetime.now().astimezone().isoformat(), "event_type": "metrics",
                     "data": {"step": i, "metrics": metrics(i, n)}}
            f.write(dumps(event) + "\n")
    return time.perf_counter() - start


def orjson_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def local_times(folder: Path, n: int, repeat: int) -> dict[str, list[float]]:
    """Interleaved rounds after a warm-up: seconds per timed round of calls, e2e, bare (json), bare (orjson)."""
    times: dict[str, list[float]] = {"calls": [], "e2e": [], "bare": [], "orjson": []}

    def expstore_round(keep: bool, r: int) -> None:
        c, e = run_logger(folder / f"logs-{r}", n)
        if keep:
            times["calls"].append(c)
            times["e2e"].append(e)

    def bare_round(keep: bool, r: int) -> None:
        b = run_bare(folder / f"bare-{r}.jsonl", n, json.dumps)
        if keep:
            times["bare"].append(b)

    def orjson_round(keep: bool, r: int) -> None:
        b = run_bare(folder / f"orjson-{r}.jsonl", n, orjson_dumps)
        if keep:
            times["orjson"].append(b)

    rounds: list[Callable[[bool, int], None]] = [expstore_round, bare_round, orjson_round]
    for op in rounds:
        op(False, -1)
    for r in range(repeat):
        for op in rounds[r % 3:] + rounds[: r % 3]:
            op(True, r)
    return times


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
        times = local_times(folder, n, args.repeat)
    rate = {name: n / statistics.median(t) for name, t in times.items()}
    best = {name: n / min(t) for name, t in times.items()}

    def row(op: str, key: str, target: bool) -> list[str]:
        ratio = rate["bare"] / rate[key]
        ok = rate[key] >= TARGET_EVENTS_S and ratio <= TARGET_RATIO
        return [op, f"{rate[key]:,.0f} ({best[key]:,.0f})", f"{ratio:.2f}", f"{rate['orjson'] / rate[key]:.2f}",
                f">= {TARGET_EVENTS_S:,}/s, <= {TARGET_RATIO}" if target else "-", ("ok" if ok else "NO") if target else "-"]

    rows = [
        ["operation", "events/s median (best)", "ratio to bare json loop", "ratio to bare orjson loop", "target", "ok?"],
        row("local: create + calls + finalize (on disk)", "e2e", True),
        row("local: log_metrics calls only", "calls", False),
        ["bare loop: json.dumps + write", f"{rate['bare']:,.0f} ({best['bare']:,.0f})", "1.00", f"{rate['orjson'] / rate['bare']:.2f}", "-", "-"],
        ["bare loop: orjson.dumps + write", f"{rate['orjson']:,.0f} ({best['orjson']:,.0f})", f"{rate['bare'] / rate['orjson']:.2f}", "1.00", "-", "-"],
    ]
    if not args.no_s3:
        seconds, puts = s3_row(n)
        rows.append([f"s3 (moto): create + calls + finalize, {puts} PUTs", f"{n / seconds:,.0f}", "-", "-",
                     f"<= {max(1, n // 1000)} PUTs", "ok" if puts <= max(1, n // 1000) else "NO"])
    print(render(rows))
    print()
    print(f"note: {n:,} events per round; median of {args.repeat} interleaved rounds, best in parentheses")
    print("note: bare loops = build the event dict with datetime.now().astimezone().isoformat(), json.dumps or "
          "orjson.dumps, file.write (JSONL only, and orjson's compact form); expstore also writes the .log line of every event")
    print("note: moto runs in this process (ThreadedMotoServer): server, client and flusher share the GIL")
    print(f"machine: {machine(PACKAGES)}")
    print(f"command: {shlex.join(sys.orig_argv)}")
    return 0


if __name__ == "__main__":
    run(main, "interrupted: local files removed, S3 server stopped")
