"""Child processes for tests/experiment_logger/test_experiment_logger.py: `python -m tests.workers.logger_workers MODE URL NAME INTERVAL`.

Storage options come as JSON in the environment variable ``LOGGER_WORKER_OPTIONS``; the run
summary's heartbeat interval, in seconds, in ``LOGGER_WORKER_HEARTBEAT`` (default: the logger's). Each event is
``log_metrics({"id": i}, step=i)`` for i = 0, 1, 2, ...; the worker prints ``ready`` once the
logger exists and then every 10th id after logging it (flushed), so the parent knows what was
logged before it acts.

Modes:
  kill     log forever (the parent sends SIGKILL)
  sigterm  log forever inside ``with logger:`` (the parent sends SIGTERM)
  exit     log 500 events, print ``done`` and return without `finalize` (atexit must flush)
"""

from __future__ import annotations

import json
import os
import sys
import time

from expstore.experiment_logger import ExperimentLogger
from expstore.experiment_logger import summaries as log_catalog

EXIT_EVENTS = 500


def log_forever(logger: ExperimentLogger) -> None:
    i = 0
    while True:
        logger.log_metrics({"id": i}, step=i)
        if i % 10 == 0:
            print(i, flush=True)
        i += 1
        time.sleep(0.0005)


def main() -> None:
    mode, url, name, interval = sys.argv[1:5]
    options = json.loads(os.environ.get("LOGGER_WORKER_OPTIONS", "{}"))
    if "LOGGER_WORKER_HEARTBEAT" in os.environ:
        log_catalog.HEARTBEAT_SECONDS = float(os.environ["LOGGER_WORKER_HEARTBEAT"])
    logger = ExperimentLogger(name, url, log_to_console=False, flush_interval=float(interval), **options)
    print("ready", flush=True)
    if mode == "kill":
        log_forever(logger)
    elif mode == "sigterm":
        with logger:
            log_forever(logger)
    elif mode == "exit":
        for i in range(EXIT_EVENTS):
            logger.log_metrics({"id": i}, step=i)
        print("done", flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
