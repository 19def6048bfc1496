"""Child process for tests/catalog/test_postgres_push.py: `python -m tests.workers.catalog_workers ROOT NAME CATALOG GO_FILE`.

Logs one run named NAME under ``ROOT/NAME/logs`` with a logger that pushes to CATALOG: its config
(``worker`` = NAME, ``lr``), a few metrics (the last ``loss`` is ``1 / (1 + index)`` where index is
the number at the end of NAME), waits until its first push is in the catalog, prints ``ready``, waits until GO_FILE exists (so that every worker
finalizes at the same moment), then finalizes with status ``completed`` and prints ``done``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from expstore.catalog import open_catalog
from expstore.experiment_logger import create_experiment_logger


def final_loss(index: int) -> float:
    """The last loss a worker of this index logs (the test checks it in the catalog)."""
    return 1.0 / (1 + index)


def main() -> None:
    root, name, catalog, go_file = sys.argv[1:5]
    index = int(name.rsplit("_", 1)[1])
    logger = create_experiment_logger(name, f"{root}/{name}/logs", verbose=False, catalog=catalog, flush_interval=0.2)
    logger.log_config({"worker": name, "lr": 0.001 * (index + 1), "model": {"layers": index}})
    for step in range(5):
        logger.log_metrics({"loss": final_loss(index) + (4 - step), "step_seen": step}, step=step)
    with open_catalog(catalog) as view:  # ready once the first push landed: what is tested is finishing at once
        while view.search(root, f"name = '{name}'").empty:
            time.sleep(0.05)
    print("ready", flush=True)
    while not Path(go_file).exists():
        time.sleep(0.01)
    logger.finalize("completed")
    print("done", flush=True)


if __name__ == "__main__":
    main()
