"""Rank processes for tests/experiment_logger/test_logger_ranks.py, started with multiprocessing's spawn method."""

from __future__ import annotations

from typing import Any

from expstore.experiment_logger import ExperimentLogger

EVENTS = 200  # log_metrics calls per rank


def final_status(rank: int) -> str:
    """The status rank `rank` finalizes with: the last of four ranks fails, the others complete."""
    return "failed" if rank == 3 else "completed"


def loss(rank: int, step: int) -> float:
    """The loss rank `rank` logs at `step` (distinct per rank, so the per-rank analysis can be checked)."""
    return rank + 1.0 / (step + 1)


def log_as_rank(url: str, options: dict[str, Any], name: str, rank: int, barrier: Any) -> None:
    """Log `EVENTS` metrics as `rank` of one experiment, all ranks at once (after `barrier`), then finalize."""
    logger = ExperimentLogger(name, url, log_to_console=False, flush_interval=0.05, rank=rank, **options)
    barrier.wait(60)
    for step in range(EVENTS):
        logger.log_metrics({"loss": loss(rank, step), "rank": rank}, step=step)
        if step % 50 == 0:
            logger.flush()  # segments on S3 while the other ranks are still logging
    logger.log_result({"rank": rank})
    summary = logger.finalize(final_status(rank))
    if summary["events_lost"]:
        raise SystemExit(f"rank {rank} lost {summary['events_lost']} events")


def log_without_rank(url: str, options: dict[str, Any], name: str, writer: int, barrier: Any) -> None:
    """Log `EVENTS` metrics tagged with `writer` under `name` and no rank, as another process does too, then finalize."""
    logger = ExperimentLogger(name, url, log_to_console=False, flush_interval=0.05, **options)
    barrier.wait(60)
    for step in range(EVENTS):
        logger.log_metrics({"writer": writer}, step=step)
        if step % 50 == 0:
            logger.flush()  # segments of both sessions on the store at once
    logger.log_metrics({"writer": writer, "last": True}, step=EVENTS)  # still in memory at finalize
    barrier.wait(60)  # both finalize at the same moment: the merges race
    summary = logger.finalize()
    if summary["events_lost"]:
        raise SystemExit(f"writer {writer} lost {summary['events_lost']} events")
