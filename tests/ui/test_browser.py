"""The dashboard in a real browser: Playwright driving the system Chromium against `expstore ui` in a subprocess.

The root is written by real loggers and checkpoint managers; a live run is a logger in another
process (tests/workers/ui_workers.py). Waits are Playwright's (`wait_for_selector`,
`wait_for_function`) with timeouts; screenshots of the three pages go to the test's tmp folder.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from expstore.checkpointing import CheckpointManager
from expstore.experiment_logger import ExperimentLogger
from tests.workers import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run",
]
XSS = "<img src=x onerror=alert(1)>"
WAIT_MS = 20_000


def log_run(root: Path, name: str, config: dict[str, Any], steps: int, checkpoints: int = 0) -> str:
    """A finished run under `root` (logs and, when asked, checkpoints); its run id."""
    logger = ExperimentLogger(name, str(root / name / "logs"), log_to_console=False)
    logger.log_config(config)
    for i in range(steps):
        logger.log_metrics({"loss": config["lr"] * 10 / (1 + i), "acc": i / steps}, step=i)
    logger.log_metrics({"only_once": 1.0}, step=steps)
    if checkpoints:
        with CheckpointManager(str(root / name / "checkpoints"), name, keep_last_n=None, save_frequency=1) as manager:
            for it in range(1, checkpoints + 1):
                manager.save_checkpoint({"w": np.arange(10.0) * it}, it)
    logger.finalize()
    return f"{name}/logs/{name}"


def run_hash(run_id: str) -> str:
    """The hash route of the run page of `run_id`."""
    return f"#/run/{quote(run_id, safe='')}"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian's chromium package; .ci/run installs it)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that records every dialog (none may open) and every script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.dialogs, p.errors = [], []
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    p.on("pageerror", lambda e: p.errors.append(str(e)))
    yield p
    context.close()
    assert p.errors == []


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A root with runs alpha (2 checkpoints), beta, an XSS-named run and a few more; their ids."""
    root = tmp_path_factory.mktemp("ui-root")
    ids = {
        "alpha": log_run(root, "alpha", {"lr": 0.1, "opt": "adam", "depth": 3}, 40, checkpoints=2),
        "beta": log_run(root, "beta", {"lr": 0.01, "opt": "adam", "depth": 4}, 30),
        "xss": log_run(root, XSS, {"lr": 0.5, "opt": "sgd", "depth": 3, "note": "<script>alert(2)</script>"}, 5),
    }
    for k in range(4):
        ids[f"more{k}"] = log_run(root, f"more{k}", {"lr": 0.2 + k, "opt": "sgd", "depth": 3}, 3)
    return {"root": root, "ids": ids}


@pytest.fixture
def base(runs_root: dict[str, Any], start_dashboard: Any) -> str:
    """The URL of `expstore ui` over `runs_root` (its catalog synced before it serves)."""
    return start_dashboard(str(runs_root["root"])).url.rstrip("/")


def rows(page: Any) -> list[str]:
    """The run names in the runs table, top to bottom."""
    return page.locator("[data-testid=run-row] [data-testid=run-link]").all_text_contents()


def test_runs_table_shows_every_run_and_the_filter_narrows_it(page: Any, base: str, runs_root: dict[str, Any],
                                                              tmp_path: Path) -> None:
    page.goto(f"{base}/#/")
    page.wait_for_selector("[data-testid=run-row]", timeout=WAIT_MS)
    names = {rid.split("/")[0] for rid in runs_root["ids"].values()}
    assert set(rows(page)) == names
    assert page.get_attribute("[data-testid=runs-total]", "data-total") == str(len(names))
    page.screenshot(path=str(tmp_path / "runs.png"))

    page.fill("[data-testid=filter-input]", "params.lr < 0.05")
    page.press("[data-testid=filter-input]", "Enter")
    page.wait_for_function("document.querySelectorAll('[data-testid=run-row]').length === 1", timeout=WAIT_MS)
    assert rows(page) == ["beta"]

    page.fill("[data-testid=filter-input]", "params.lr <")
    page.press("[data-testid=filter-input]", "Enter")
    page.wait_for_function("document.querySelector('[data-testid=filter-error]').textContent !== ''", timeout=WAIT_MS)
    assert "position 11" in page.text_content("[data-testid=filter-error]")
    assert rows(page) == ["beta"]  # the last good result stays


def test_sorting_by_a_param_column_asks_the_server(page: Any, base: str) -> None:
    page.goto(f"{base}/#/")
    header = page.locator("[data-testid=sort-header][data-field='params.lr']")
    header.click()  # descending first
    page.wait_for_function("document.querySelector('[data-testid=run-link]').textContent === 'more3'", timeout=WAIT_MS)
    header.click()
    page.wait_for_function("document.querySelector('[data-testid=run-link]').textContent === 'beta'", timeout=WAIT_MS)
    assert rows(page)[:2] == ["beta", "alpha"]


def test_run_page_draws_a_chart_per_metric_with_every_point(page: Any, base: str, runs_root: dict[str, Any],
                                                            tmp_path: Path) -> None:
    page.goto(f"{base}/{run_hash(runs_root['ids']['alpha'])}")
    page.wait_for_selector("[data-testid=chart][data-metric=only_once][data-points]", timeout=WAIT_MS)
    charts = page.locator("[data-testid=chart]")
    drawn = {c.get_attribute("data-metric"): c.get_attribute("data-points") for c in charts.all()}
    assert drawn == {"acc": "40", "loss": "40", "only_once": "1"}
    assert page.locator("[data-testid=chart] canvas").count() == 3
    assert page.locator("[data-testid=config-table] td", has_text="adam").count() == 1

    page.check("[data-testid=log-scale]")  # acc's first point is 0: a log axis cannot show it
    page.wait_for_selector("[data-testid=chart][data-metric=acc][data-points='39']", timeout=WAIT_MS)

    assert page.locator("[data-testid=checkpoints-table] tbody tr").count() == 2
    page.locator("[data-testid=verify-button]").first.click()
    page.wait_for_selector("[data-testid=verify-result].ok", timeout=WAIT_MS)
    assert page.locator("[data-testid=events-table] tbody tr").count() > 40
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)


def test_xss_names_and_values_stay_text(page: Any, base: str, runs_root: dict[str, Any]) -> None:
    page.goto(f"{base}/#/")
    page.wait_for_selector("[data-testid=run-row]", timeout=WAIT_MS)
    assert XSS in rows(page)
    assert page.locator("[data-testid=runs-table] img").count() == 0

    page.goto(f"{base}/{run_hash(runs_root['ids']['xss'])}")
    page.wait_for_selector("[data-testid=config-table]", timeout=WAIT_MS)
    assert page.text_content("[data-testid=run-name]") == XSS
    assert page.locator("[data-testid=config-table] td", has_text="<script>alert(2)</script>").count() == 1
    assert page.locator("main img, main script").count() == 0
    assert page.dialogs == []


def test_compare_page_overlays_the_runs_and_shows_differing_config(page: Any, base: str, runs_root: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    page.goto(f"{base}/#/")
    for name in ("alpha", "beta"):
        page.locator("[data-testid=run-row]", has=page.locator("[data-testid=run-link]", has_text=name)).locator("input").check()
    page.click("[data-testid=compare-button]")
    page.wait_for_selector("[data-testid=chart][data-metric=loss][data-points]", timeout=WAIT_MS)
    assert page.get_attribute("[data-testid=chart][data-metric=loss]", "data-points") == str(40 + 30)
    legend = page.locator("[data-testid=chart][data-metric=loss] .u-legend").text_content()
    assert "alpha" in legend and "beta" in legend
    diff = page.locator("[data-testid=diff-table] tbody tr")
    assert sorted(diff.evaluate_all("rows => rows.map(r => r.dataset.key)")) == ["depth", "lr"]
    assert page.locator("[data-testid=diff-table] tr[data-key=lr] td").all_text_contents() == ["lr", "0.1", "0.01"]
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)


def test_unknown_run_shows_the_servers_error(page: Any, base: str) -> None:
    page.goto(f"{base}/{run_hash('nope/logs/nope')}")
    page.wait_for_selector("[data-testid=page-error]", timeout=WAIT_MS)
    assert page.text_content("[data-testid=page-error]") != ""


def test_with_a_token_the_page_opened_at_its_url_works_and_without_it_gets_401(browser: Any, runs_root: dict[str, Any],
                                                                            start_dashboard: Any) -> None:
    ui = start_dashboard(str(runs_root["root"]), token="tok-123456789")
    context = browser.new_context()
    try:
        page = context.new_page()
        assert page.goto(ui.url).status == 401
        page.goto(f"{ui.url}?token=tok-123456789#/")
        page.wait_for_selector("[data-testid=run-row]", timeout=WAIT_MS)  # its fetches carry the cookie the server set
        assert len(rows(page)) == len(runs_root["ids"])
        page.goto(f"{ui.url}{run_hash(runs_root['ids']['alpha'])}")  # no token in the URL: the cookie
        page.wait_for_selector("[data-testid=chart][data-metric=loss][data-points='40']", timeout=WAIT_MS)
    finally:
        context.close()


def test_live_run_gains_points_while_a_logger_writes_in_another_process(page: Any, tmp_path: Path, start_dashboard: Any) -> None:
    root = tmp_path / "live-root"
    worker = subprocess.Popen([sys.executable, "-m", "tests.workers.ui_workers", str(root / "live" / "logs"), "live"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)

    def log(points: int, total: int) -> None:
        worker.stdin.write(f"log {points}\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == f"flushed {total}"

    try:
        assert worker.stdout.readline().strip() == "flushed 0"
        log(3, 3)
        base = start_dashboard(str(root)).url.rstrip("/")
        page.goto(f"{base}/{run_hash('live/logs/live')}")
        page.wait_for_selector("[data-testid=chart][data-metric=loss][data-points='3']", timeout=WAIT_MS)
        assert page.is_visible("[data-testid=live]")
        log(5, 8)
        page.wait_for_selector("[data-testid=chart][data-metric=loss][data-points='8']", timeout=WAIT_MS)
        log(4, 12)
        page.wait_for_selector("[data-testid=chart][data-metric=acc][data-points='12']", timeout=WAIT_MS)
        assert page.locator("[data-testid=events-table] td", has_text='"step":12').count() == 1
        worker.stdin.write("end\n")
        worker.stdin.flush()
        assert worker.stdout.readline().strip() == "ended"
        page.wait_for_selector("[data-testid=status]:text-is('completed')", timeout=WAIT_MS)  # then the page stops polling
        page.wait_for_selector("[data-testid=live]", state="hidden", timeout=WAIT_MS)
        page.wait_for_selector("[data-testid=events-table] td:text-is('experiment_end')", timeout=WAIT_MS)
    finally:
        worker.kill()
        worker.wait()
