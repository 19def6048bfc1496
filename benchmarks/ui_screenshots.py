"""The README's dashboard screenshots: three `expstore demo` runs, `expstore ui`, headless Chromium.

    python benchmarks/ui_screenshots.py                  # writes docs/images/ui-runs.png, ui-run.png, ui-compare.png
    python benchmarks/ui_screenshots.py --out /tmp/shots

The demo runs (`demo_seed0`, `demo_seed1`, `demo_seed2`: seeds 0, 1, 2, 600 iterations) are made in a
scratch folder under the temporary folder, removed afterwards; the server gets its own SQLite catalog
there. The run page is shown with its log-scale toggle on and its last checkpoint verified; the compare
page keeps the log scale chosen there (the page remembers the chart options).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import benchlib
from ui_bench import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, catalogued, ui_server, wait_for

SEEDS = (0, 1, 2)


def make_demo_runs(root: Path) -> list[str]:
    """One `expstore demo` run per seed under `root`; their run ids."""
    ids = []
    for seed in SEEDS:
        name = f"demo_seed{seed}"
        subprocess.run([sys.executable, "-m", "expstore", "demo", "--url", str(root), "--name", name, "--seed", str(seed),
                        "--iterations", "600", "--no-progress"], check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
        ids.append(f"{name}/logs/{name}")
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images",
                        help="folder of the PNGs (default docs/images)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with benchlib.scratch_folder(Path(tempfile.gettempdir()), "expstore-demo-") as folder:
        root = folder / "runs"
        ids = make_demo_runs(root)
        with ui_server(root, f"sqlite:///{folder / 'catalog.sqlite'}") as base, sync_playwright() as p:
            wait_for(lambda: catalogued(base, len(ids)), "the demo runs in the catalog", 60)
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 600})
            page.goto(f"{base}/#/")
            page.wait_for_selector("[data-testid=run-row]")
            for row in (0, 1):
                page.locator("[data-testid=run-row] input").nth(row).check()
            page.screenshot(path=str(args.out / "ui-runs.png"))
            page.set_viewport_size({"width": 1280, "height": 720})
            page.goto(f"{base}/#/run/{quote(ids[0], safe='')}")
            page.wait_for_selector("[data-testid=chart][data-points]")
            page.wait_for_selector("[data-testid=checkpoints-table]")
            page.click("[data-testid=verify-button] >> nth=-1")
            page.wait_for_selector("[data-testid=verify-result].ok")
            page.check("[data-testid=log-scale]")
            page.evaluate("window.scrollTo(0, 0)")
            top = {"x": 0, "y": 0, "width": 1280, "height": 1250}  # charts and checkpoints
            page.screenshot(path=str(args.out / "ui-run.png"), full_page=True, clip=top)
            page.goto(f"{base}/#/compare/{','.join(quote(i, safe='') for i in ids)}")
            page.wait_for_selector("[data-testid=diff-table]")
            page.wait_for_selector("[data-testid=chart][data-points]")
            page.screenshot(path=str(args.out / "ui-compare.png"), full_page=True)
            browser.close()
    for name in ("ui-runs.png", "ui-run.png", "ui-compare.png"):
        print(args.out / name)
    return 0


if __name__ == "__main__":
    benchlib.run(main, "ui_screenshots: interrupted")
