"""A live run for the dashboard's browser tests and benchmark: `python -m tests.workers.ui_workers LOGS_URL NAME PERIOD [MAX]`.

Logs ``{"loss": 1 / (1 + i)}`` at step i every PERIOD seconds into an `ExperimentLogger` writing to
LOGS_URL (the run's ``logs`` folder), flushes after each point, and then prints
``flushed <points logged> <unix time of the flush's end>``, so the parent knows what is on the store
and since when. Stops after MAX points (default 3000) with `finalize`, or when killed.
"""

from __future__ import annotations

import sys
import time

from expstore.experiment_logger import ExperimentLogger


def main() -> None:
    url, name, period = sys.argv[1], sys.argv[2], float(sys.argv[3])
    limit = int(sys.argv[4]) if len(sys.argv) > 4 else 3000
    logger = ExperimentLogger(name, url, log_to_console=False, flush_interval=period)
    logger.log_config({"lr": 0.5, "live": True})
    logger.flush()
    print("ready", flush=True)
    for i in range(limit):
        logger.log_metrics({"loss": 1.0 / (1 + i)}, step=i)
        logger.flush()
        print(f"flushed {i + 1} {time.time():.6f}", flush=True)
        time.sleep(period)
    logger.finalize()
    print("done", flush=True)


if __name__ == "__main__":
    main()
