"""Dashboard benchmark: `expstore ui` in a subprocess, timed from headless Chromium, against the targets.

    python benchmarks/ui_bench.py              # 10,000 runs, a 100,000-point metric, 50 API clients
    python benchmarks/ui_bench.py --quick      # 500 runs, 10,000 points, 10 clients: a smoke run

The root holds the catalog benchmark's runs (their summary objects, written by `catalog_bench.write_root`),
one run whose metric has `--points` points (logged by an `ExperimentLogger`), and one live run: a logger
in another process (tests/workers/ui_workers.py) that logs and flushes a point when this script tells it,
about every `--period` seconds (0.5 to 1.5 times it, at random) while the live figure is timed.
The server gets its own SQLite catalog in the scratch folder.
Figures (median of `--repeat`, each page load in a fresh browser context, so nothing is cached):

* runs page: navigation start -> the first rows of the table in the DOM;
* run page: navigation start -> the 100,000-point chart drawn (its `data-points` set by uPlot's draw hook);
* live update: the worker's flush of one point (the time this script reads its answer) -> the page's chart
  showing that point (a MutationObserver on the chart's `data-points` notes the page's clock; same machine);
* API: `--clients` threads, each polling the live run's /api/metrics and /api/events with `since=` once a
  second for `--seconds`, as the page does, while the run logs and flushes a point every 0.1 s; p99 of every
  request's latency (the clients are threads of this process: their own overhead is in the figure).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import benchlib
import catalog_bench
import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run",
]
BIG, LIVE = "big", "live"


@contextlib.contextmanager
def ui_server(root: Path, catalog: str, refresh: float = 1.0) -> Iterator[str]:
    """`expstore ui ROOT --port 0` in a subprocess; yields its URL (from the line it prints), stops it after."""
    cmd = [sys.executable, "-m", "expstore", "ui", str(root), "--port", "0", "--catalog", catalog, "--refresh", str(refresh)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("expstore ui: serving "):
                url = line.rsplit(" at ", 1)[1].strip()
                threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain the rest
                yield url.rstrip("/")
                return
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.wait()} before serving:\n{''.join(seen)}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for(check: Any, what: str, timeout: float) -> Any:
    """Call `check` until it returns a true value (then return it), at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.1)


def catalogued(base: str, total: int) -> bool:
    """Whether the server's catalog holds `total` runs."""
    return httpx.get(f"{base}/api/runs", params={"limit": 1}).json().get("total") == total


def running(base: str, run_id: str) -> bool:
    """Whether the server sees `run_id` as a running run."""
    r = httpx.get(f"{base}/api/run", params={"id": run_id})
    return r.status_code == 200 and r.json().get("status") == "running"


def log_big_run(root: Path, points: int) -> None:
    """A finished run named `big` whose metric `loss` has `points` points."""
    from expstore.experiment_logger import ExperimentLogger

    logger = ExperimentLogger(BIG, str(root / BIG / "logs"), log_to_console=False)
    logger.log_config({"lr": 0.1, "points": points})
    for i in range(points):
        logger.log_metrics({"loss": 1.0 / (1 + i)}, step=i)
    logger.finalize()


class LiveRun:
    """The worker process of the live run (tests/workers/ui_workers.py), which logs and flushes when told."""

    def __init__(self, root: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.workers.ui_workers", str(root / LIVE / "logs"), LIVE],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
        self.total = 0
        if self._answer() != "flushed 0":
            raise RuntimeError("the live-run worker did not start")

    def _answer(self) -> str:
        """The worker's next line."""
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def log(self, points: int) -> float:
        """Log and flush `points` more points; the unix time at which the flush had ended."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"log {points}\n")
        self.proc.stdin.flush()
        self.total += points
        if self._answer() != f"flushed {self.total}":
            raise RuntimeError("the live-run worker did not flush")
        return time.time()

    def stop(self) -> None:
        """Kill the worker (the run stays `running` in its summary; nothing waits on it)."""
        self.proc.kill()
        self.proc.wait()


@contextlib.contextmanager
def feeding(live: LiveRun, period: float) -> Iterator[None]:
    """The live run logging and flushing a point every `period` seconds (in a thread) while the block runs."""
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(period):
            live.log(1)

    thread = threading.Thread(target=feed)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_url(base: str, run_id: str) -> str:
    """The address of the run page of `run_id`."""
    return f"{base}/#/run/{quote(run_id, safe='')}"


def time_page(browser: Any, url: str, selector: str, repeat: int) -> list[float]:
    """Seconds from navigation start to `selector` in the DOM, once per fresh context."""
    times = []
    for _ in range(repeat + 1):  # the first load warms the server's caches, and is not counted
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector(selector, state="attached", timeout=30_000)
        times.append(page.evaluate("performance.now()") / 1000)
        context.close()
    return times[1:]


SEEN_SCRIPT = """() => {
  window.__seen = [];
  const box = document.querySelector("[data-testid=chart][data-metric=loss]");
  new MutationObserver(() => window.__seen.push([Number(box.dataset.points), Date.now() / 1000]))
    .observe(box, { attributes: true, attributeFilter: ["data-points"] });
}"""


def time_live(browser: Any, base: str, live: LiveRun, updates: int, period: float) -> list[float]:
    """Seconds from each of `updates` flushes of one point (about every `period` s) to the page's chart showing it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(run_url(base, f"{LIVE}/logs/{LIVE}"))
    page.wait_for_selector(f"[data-testid=chart][data-metric=loss][data-points='{live.total}']", timeout=30_000)
    page.evaluate(SEEN_SCRIPT)
    flushed = {}
    pauses = random.Random(0)  # flushes at irregular times, so they fall at every phase of the page's polling
    for _ in range(updates):
        at = live.log(1)
        flushed[live.total] = at
        time.sleep(pauses.uniform(0.5 * period, 1.5 * period))
    page.wait_for_function(f"window.__seen.some(([n]) => n >= {live.total})", timeout=30_000)
    seen = page.evaluate("window.__seen")
    page.close()
    return [min(t for count, t in seen if count >= n) - at for n, at in flushed.items()]


def poll_clients(base: str, run_id: str, clients: int, seconds: float) -> list[float]:
    """Latencies of every request of `clients` threads polling metrics and events of `run_id` once a second."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(k: int) -> None:
        mine = []
        with httpx.Client(base_url=base, timeout=30) as http:
            cursors = {"metrics": 0, "events": 0}
            start.wait()
            time.sleep(k / clients)  # spread over the second, as independent pages are
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                tick = time.monotonic()
                for what in ("metrics", "events"):
                    t0 = time.perf_counter()
                    r = http.get(f"/api/{what}", params={"id": run_id, "since": cursors[what]})
                    mine.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    cursors[what] = r.json()["cursor"]
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def p99(values: list[float]) -> float:
    """The 99th percentile of `values`."""
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def report(rows: list[tuple[str, str, float, float]]) -> str:
    """The table: figure, measured (with how), target, ok?"""
    lines = [[figure, f"{value * 1000:.0f} ms ({how})", f"<= {target * 1000:.0f} ms", "ok" if value <= target else "NO"]
             for figure, how, value, target in rows]
    return benchlib.render_columns(["figure", "measured", "target", "ok?"], lines)


def chromium_version() -> str:
    """What `chromium --version` says, for the machine line."""
    out = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    return out or "chromium ?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the API clients poll (default 10)")
    parser.add_argument("--updates", type=int, default=20, help="live points timed (default 20)")
    parser.add_argument("--period", type=float, default=0.5, help="seconds between the live run's timed points (default 0.5)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="500 runs, 10,000 points, 10 clients for 3 s, 3 repeats")
    parser.add_argument("--dir", type=Path, help="scratch folder parent (default ./.bench-tmp)")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.points, args.clients, args.seconds, args.repeat, args.updates = 500, 10_000, 10, 3.0, 3, 5
    from playwright.sync_api import sync_playwright

    with benchlib.scratch_folder(args.dir, "ui-bench-") as folder:
        root = folder / "root"
        catalog_bench.write_root(root, args.runs, steps=0)
        log_big_run(root, args.points)
        live = LiveRun(root)
        try:
            live.log(5)
            with ui_server(root, f"sqlite:///{folder / 'catalog.sqlite'}") as base, sync_playwright() as p:
                wait_for(lambda: catalogued(base, args.runs + 2), "every run in the catalog", 300)
                wait_for(lambda: running(base, f"{LIVE}/logs/{LIVE}"), "the live run running", 60)
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                runs_page = time_page(browser, f"{base}/#/", "[data-testid=run-row]", args.repeat)
                big_page = time_page(browser, run_url(base, f"{BIG}/logs/{BIG}"),
                                     f"[data-testid=chart][data-points='{args.points}']", args.repeat)
                live_s = time_live(browser, base, live, args.updates, args.period)
                browser.close()
                with feeding(live, 0.1):
                    api = poll_clients(base, f"{LIVE}/logs/{LIVE}", args.clients, args.seconds)
        finally:
            live.stop()
    rows = [
        (f"runs page, {args.runs + 2:,} runs: first rows visible", f"median of {args.repeat}", statistics.median(runs_page), 1.0),
        (f"run page, {args.points:,}-point metric: chart drawn", f"median of {args.repeat}", statistics.median(big_page), 1.0),
        ("live update: logger flush -> point visible", f"median of {len(live_s)}, max {max(live_s) * 1000:.0f} ms",
         statistics.median(live_s), 2.0),
        (f"API: {args.clients} clients polling a live run, p99",
         f"{len(api)} requests, median {statistics.median(api) * 1000:.0f} ms", p99(api), 0.1),
    ]
    print(report(rows))
    print()
    print(f"machine: {benchlib.machine(['starlette', 'uvicorn', 'playwright'], [chromium_version()])}")
    print(f"command: python benchmarks/ui_bench.py {' '.join(sys.argv[1:])}".rstrip())
    return 0


if __name__ == "__main__":
    benchlib.run(main, "ui_bench: interrupted")
