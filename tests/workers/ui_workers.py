"""A run that logs when told, for the dashboard's live tests: `python -m tests.workers.ui_workers URL NAME`.

Reads commands on stdin: ``log N`` logs N metric events (``loss`` and ``acc`` at the next steps) and
flushes them to the store, then prints ``flushed <total>``; ``end`` finalizes the run and exits.
Storage options come as JSON in ``UI_WORKER_OPTIONS``.
"""

from __future__ import annotations

import json
import os
import sys

from expstore.experiment_logger import ExperimentLogger


def main() -> None:
    url, name = sys.argv[1:3]
    options = json.loads(os.environ.get("UI_WORKER_OPTIONS", "{}"))
    logger = ExperimentLogger(name, url, log_to_console=False, flush_interval=60.0, **options)
    logger.log_config({"lr": 0.1, "worker": True})
    logger.flush()
    print("flushed 0", flush=True)
    step = 0
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "log":
            for _ in range(int(rest[0])):
                step += 1
                logger.log_metrics({"loss": 1.0 / step, "acc": step / 1000}, step=step)
            logger.flush()
            print(f"flushed {step}", flush=True)
        elif command == "end":
            break
    logger.finalize()
    print("ended", flush=True)


if __name__ == "__main__":
    main()
