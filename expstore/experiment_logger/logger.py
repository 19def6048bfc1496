"""Experiment logging on any store: `ExperimentLogger` and `create_experiment_logger`.

Each event goes two ways: the structured log ``<name>_structured.jsonl`` (one
``{"timestamp", "event_type", "data"}`` object per line) and the human log ``<name>.log``
(``2025-12-31 05:30:00 - experiment.<name> - INFO - ...``), both in `output_dir` (a path, a
URL such as ``s3://bucket/run/logs``, or a `Store`). The logger is a standard `logging` logger
named ``experiment.<name>``; its records written by other code land in ``<name>.log`` too.
With ``rank=r`` (one process of a distributed job) the stem is ``<name>.rank<r>`` for the files,
their segments and the `logging` name, and every JSONL object carries ``"rank": r``; the readers
merge all ranks by timestamp.

The calls never do I/O: they queue the event, and a background thread (`expstore.experiment_logger.sink`)
formats and writes it within `flush_interval` seconds (appends on local and memory stores,
numbered segments elsewhere, merged by `finalize`). See docs/logging.md.
"""

from __future__ import annotations

import copy
import logging
import sys
import time
import traceback
import warnings
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..store.base import Store
from ..store.keys import validate_experiment_name, validate_key
from ..store.locate import join_url
from ..store.registry import open_store
from .catalog_push import CatalogPush, catalog_url, start_push
from .environment import describe_environment, environment_line
from .layout import rank_stem, structured_key, text_key
from .line_format import LOG_DATE_FORMAT, LOG_FORMAT, human_text
from .sink import MAX_QUEUED, LogSink, MiB, check_flush_policy
from .summaries import iso_time

__all__ = ["ExperimentLogger", "create_experiment_logger"]

DIRECT = "_expstore_direct"  # set on records the logger queued itself, so its store handler skips them
_OWNED = "_expstore_owned"  # marks the handlers an ExperimentLogger installed
DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR
_INTERRUPTS = (KeyboardInterrupt, SystemExit)


# Values that cannot change after they are logged; anything else is copied when it is logged,
# because the flusher encodes it later (an array the loop keeps updating in place must be logged
# as it was at the call, not as it is at the next flush).
_IMMUTABLE = frozenset({float, int, str, bool, type(None), np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_})


def _frozen(value: Any) -> Any:
    """A copy of a mutable value as it is now (arrays and containers); other objects as they are."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, dict, set, tuple, bytearray)):
        try:
            return copy.deepcopy(value)
        except Exception:  # noqa: BLE001 - an uncopyable value is logged as it is at the flush
            return value
    return value


def _snapshot(values: dict[str, Any]) -> dict[str, Any]:
    """`values` (a fresh dict) with its mutable values copied, so later in-place changes do not leak into the log."""
    for key, value in values.items():
        if type(value) not in _IMMUTABLE:
            values[key] = _frozen(value)  # same key: the dict does not change size while iterated
    return values


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception as exc:  # noqa: BLE001 - a value whose str() fails must not stop training
        return f"<{type(value).__name__} whose str() failed: {type(exc).__name__}: {exc}>"


def _render(message: Any, args: tuple[Any, ...]) -> str:
    """``message % args`` as `logging` does it (one mapping argument works too); never raises."""
    if not args:
        return message if type(message) is str else _safe_str(message)
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        args = args[0]  # type: ignore[assignment]
    try:
        return _safe_str(message) % args
    except Exception as exc:  # noqa: BLE001 - a bad format must not stop training (logging would print and go on)
        try:
            shown = repr(args)
        except Exception:  # noqa: BLE001
            shown = f"<{len(args)} args>"
        return f"{_safe_str(message)} <message could not be formatted with args {shown:.200}: {type(exc).__name__}: {exc}>"


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    """A plain copy of a mapping argument (mutable values copied); `TypeError` naming `what` for anything else."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{what} must be a dict (name -> value), got {type(value).__name__} {value!r:.80}")
    return _snapshot(dict(value))


def _percent(iteration: Any, total: Any) -> float | None:
    """100 * iteration / total, or None when that is not a finite number (total 0, None, a str...)."""
    try:
        value = 100.0 * float(iteration) / float(total)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if value == value and abs(value) != float("inf") else None


class _StoreHandler(logging.Handler):
    """Sends records that other code logs on ``experiment.<name>`` to the logger's sink."""

    def __init__(self, sink: LogSink):
        super().__init__()
        self.sink = sink
        setattr(self, _OWNED, True)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, DIRECT, False):
            return
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.sink.put((record.created, record.levelno, record.name, None, None, text))
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


class ExperimentLogger:
    """Human and structured logs of one experiment in any store; a context manager that finalizes."""

    def __init__(
        self,
        experiment_name: str,
        output_dir: Any,
        log_to_file: bool = True,
        log_to_console: bool = True,
        level: int = logging.INFO,
        *,
        flush_interval: float = 2.0,
        flush_bytes: int = MiB,
        max_buffer_bytes: int = 64 * MiB,
        rank: int | None = None,
        catalog: str | bool | None = None,
        **storage_options: Any,
    ):
        self.experiment_name = validate_experiment_name(experiment_name)
        check_flush_policy(flush_interval, flush_bytes, max_buffer_bytes)  # before anything changes
        pushed_to = catalog_url(catalog)
        self.rank = _check_rank(rank)
        self._stem = rank_stem(experiment_name, self.rank)
        validate_key(structured_key(self._stem))
        self.logger = logging.getLogger(f"experiment.{self._stem}")
        self.logger.setLevel(level)
        self.logger.propagate = False
        for handler in [h for h in self.logger.handlers if getattr(h, _OWNED, False)]:
            self.logger.removeHandler(handler)  # an earlier logger of this name: no duplicate lines
        self.start_time = time.time()
        self.store: Store | None = None
        self.sink: LogSink | None = None
        self._handlers: list[logging.Handler] = []
        if log_to_file:
            self.store = open_store(output_dir, **storage_options)
            self.sink = LogSink(
                self.store,
                experiment_name,
                self.logger.name,
                flush_interval=flush_interval,
                flush_bytes=flush_bytes,
                max_buffer_bytes=max_buffer_bytes,
                owns_store=not isinstance(output_dir, Store),
                rank=self.rank,
            )
            self._put = self.sink.put
            self._queued = self.sink.queue.__len__
            self._handlers.append(_StoreHandler(self.sink))
        else:
            self._put, self._queued = _ignore, int
        if log_to_console:
            console = logging.StreamHandler(sys.stdout)
            console.setFormatter(logging.Formatter(LOG_FORMAT, LOG_DATE_FORMAT))
            setattr(console, _OWNED, True)
            self._handlers.append(console)
        for handler in self._handlers:
            self.logger.addHandler(handler)
        self._quiet = [h for h in self._handlers if isinstance(h, _StoreHandler)]  # handlers that need no record
        self._summary: dict[str, Any] | None = None
        self._names: tuple[Any, ...] = ()  # the metric names of the last `log_metrics`
        self._event(INFO, "experiment_start", {
            "experiment_name": experiment_name,
            "start_time": iso_time(self.start_time),
            "session": self.sink.session if self.sink else None,
            "output_dir": self.store.url if self.store else None,
        }, f"Experiment '{experiment_name}' started")
        self._push = start_push(pushed_to, self, flush_interval)  # None unless a catalog is configured
        # Dropped without finalize: detach the handlers and let the flusher (and pusher) write what is
        # queued and stop (no thread per forgotten logger). At interpreter exit `flush_all` does the flushing.
        self._release = weakref.finalize(self, _release, self.logger, list(self._handlers), self.sink, self._push)
        self._release.atexit = False

    # ---- the one way in ---------------------------------------------------------------------------

    def _event(self, levelno: int, event_type: str | None, data: Any, message: str | bool) -> None:
        """Queue an event (and its human line if `levelno` is enabled); other handlers get a record.

        `message` is the human line, or True for the line the event type builds from `data` in the flusher."""
        logger = self.logger
        enabled = logger.isEnabledFor(levelno)
        self._put((time.time(), levelno, None, event_type, data, message if enabled else None))
        if self._queued() > MAX_QUEUED:
            self.sink.wait_for_room()  # type: ignore[union-attr]
        if enabled and (logger.handlers != self._quiet or logger.propagate):
            logger.log(levelno, "%s", human_text(event_type, data, message), extra={DIRECT: True})

    # ---- the logging API -------------------------------------------------------------------------

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the configuration (one human line per key) and the environment that reproduces the run."""
        config = _as_dict(config, "config")
        environment = describe_environment()
        self._event(INFO, "config", {"config": config, "environment": environment}, "Configuration:")
        if self._push is not None:
            self._push.config(config, environment)
        for key, value in config.items():
            self._event(INFO, None, None, f"  {key}: {value}")
        self._event(INFO, None, None, environment_line(environment))

    def log_progress(self, iteration: int, total: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Record ``Progress: 100/1000 (10.0%) | loss=0.5000``; a total of 0 or None gives ``(n/a)``."""
        data = {"iteration": iteration, "total": total, "percent": _percent(iteration, total), "metrics": _as_dict(metrics, "metrics")}
        self._event(INFO, "progress", data, True)
        if self._push is not None:
            self._push.metrics(data["metrics"])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Record metric values (a dict name -> value), optionally at a step."""
        if type(metrics) is not dict or not _IMMUTABLE.issuperset(map(type, metrics.values())):
            metrics = _as_dict(metrics, "metrics")  # mutable values copied as they are now
        names = tuple(metrics)
        if names == self._names:
            names = self._names  # one tuple shared by the queued events of a loop
        else:
            self._names = names
        data = (names, step, *metrics.values())  # packed as `line_format.Item` says
        # `_event` inline (the hot path)
        logger = self.logger
        enabled = logger.isEnabledFor(INFO)
        self._put((time.time(), INFO, None, "metrics", data, True if enabled else None))
        if self._queued() > MAX_QUEUED:
            self.sink.wait_for_room()  # type: ignore[union-attr]
        if enabled and (logger.handlers != self._quiet or logger.propagate):
            logger.log(INFO, "%s", human_text("metrics", data, True), extra={DIRECT: True})
        if self._push is not None:
            self._push.metrics(dict(zip(names, data[2:])))

    def log_result(self, result: Mapping[str, Any]) -> None:
        """Record a result (a dict)."""
        self._event(INFO, "result", _as_dict(result, "result"), True)

    def log_error(self, error: BaseException | str, context: Mapping[str, Any] | None = None) -> None:
        """Record an exception: type, message and traceback, plus optional context."""
        if isinstance(error, BaseException):
            data = {
                "error_type": type(error).__name__,
                "message": _safe_str(error),
                "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
            }
        else:
            data = {"error_type": "Error", "message": _safe_str(error), "traceback": None}
        data["context"] = _as_dict(context, "context")
        self._event(ERROR, "error", data, True)

    def log_checkpoint(self, checkpoint_info: Mapping[str, Any]) -> None:
        """Record that a checkpoint was saved (path, iteration, ...)."""
        self._event(INFO, "checkpoint", _as_dict(checkpoint_info, "checkpoint_info"), True)

    def debug(self, message: str, *args: Any) -> None:
        """A human DEBUG line (``message % args``)."""
        self._event(DEBUG, None, None, _render(message, args))

    def info(self, message: str, *args: Any) -> None:
        """A human INFO line (``message % args``)."""
        self._event(INFO, None, None, _render(message, args))

    def warning(self, message: str, *args: Any) -> None:
        """A human WARNING line (``message % args``)."""
        self._event(WARNING, None, None, _render(message, args))

    def error(self, message: str, *args: Any) -> None:
        """A human ERROR line (``message % args``)."""
        self._event(ERROR, None, None, _render(message, args))

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Write everything logged so far now (one attempt); False if the store did not finish in `timeout`."""
        return self.sink.flush(timeout) if self.sink else True

    def finalize(self, final_status: str = "completed", timeout: float | None = 60.0) -> dict[str, Any]:
        """Log the end (status, total duration), write the final files, close the handlers; return a summary.

        The summary has ``final_status``, ``duration_seconds``, ``events_written`` and
        ``events_lost`` (events the store never took, e.g. after its endpoint died; a
        `RuntimeWarning` says so too). Calling it again returns the same summary.
        """
        if self._summary is not None:
            return self._summary
        if not isinstance(final_status, str) or not final_status:
            raise ValueError(f"final_status must be a non-empty str such as 'completed', got {final_status!r}")
        duration = time.time() - self.start_time
        level = INFO if final_status == "completed" else WARNING
        data = {"final_status": final_status, "duration_seconds": duration}
        self._event(level, "experiment_end", data, True)
        for handler in self._handlers:
            self.logger.removeHandler(handler)
            handler.close()  # a console handler leaves sys.stdout open
        self._put = self._after_finalize
        self._release.detach()
        stats = self.sink.close(finalize=True, timeout=timeout) if self.sink else {}
        self._summary = {"final_status": final_status, "duration_seconds": duration, **stats}
        if self._push is not None:
            self._push.finish(final_status, duration)
        lost = stats.get("events_lost", 0) + stats.get("lines_lost", 0)
        if lost or stats.get("pending"):
            warnings.warn(
                f"expstore logger {self.experiment_name!r}: {stats.get('events_lost', 0)} events and "
                f"{stats.get('lines_lost', 0)} log lines never reached {self.store.url if self.store else 'storage'}"
                f"{' (still writing after the timeout)' if stats.get('pending') else ''}; last error: {stats.get('last_error')}",
                RuntimeWarning,
                stacklevel=2,
            )
        return self._summary

    def _after_finalize(self, item: Any) -> None:
        """Events after `finalize` are dropped with one warning (never an exception in the training loop)."""
        if not getattr(self, "_warned_closed", False):
            self._warned_closed = True
            warnings.warn(f"expstore logger {self.experiment_name!r} is finalized; further events are dropped", RuntimeWarning, stacklevel=4)

    def __enter__(self) -> ExperimentLogger:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._summary is None:
            if exc is None:
                self.finalize("completed")
            else:
                self.log_error(exc)
                self.finalize("interrupted" if isinstance(exc, _INTERRUPTS) else "failed")
        return False

    def __repr__(self) -> str:
        where = self.store.url if self.store else "console only"
        rank = "" if self.rank is None else f", rank={self.rank}"
        return f"ExperimentLogger({self.experiment_name!r}, {where!r}{rank})"

    @property
    def log_file(self) -> str | None:
        """URL of ``<name>.log`` (``<name>.rank<r>.log`` with a rank; None without file logging)."""
        return join_url(self.store.url, text_key(self._stem)) if self.store else None

    @property
    def structured_log_file(self) -> str | None:
        """URL of ``<name>_structured.jsonl`` (this rank's file with a rank; None without file logging); `load_structured_logs` takes it."""
        return join_url(self.store.url, structured_key(self._stem)) if self.store else None


def _release(logger: logging.Logger, handlers: list[logging.Handler], sink: LogSink | None, push: CatalogPush | None) -> None:
    """What a garbage-collected, unfinalized `ExperimentLogger` leaves: its handlers detached, its flusher and pusher stopping."""
    for handler in handlers:
        logger.removeHandler(handler)  # a no-op when a later logger of this name replaced them
    if sink is not None:
        sink.release()
    if push is not None:
        push.stop()


def _check_rank(rank: object) -> int | None:
    """`rank` if it is None or an int >= 0 (the process's rank in a distributed job), else `ValueError`."""
    if rank is None or (isinstance(rank, (int, np.integer)) and not isinstance(rank, bool) and rank >= 0):
        return None if rank is None else int(rank)
    raise ValueError(f"rank must be None or an int >= 0 (this process's rank), got {rank!r}")


def _ignore(item: Any) -> None:  # noqa: ARG001
    """The sink of a logger without file logging."""


def create_experiment_logger(
    experiment_name: str, output_dir: Any, verbose: bool = True, rank: int | None = None, **kwargs: Any
) -> ExperimentLogger:
    """The factory function: an `ExperimentLogger` that prints to the console when `verbose`."""
    return ExperimentLogger(experiment_name, output_dir, log_to_file=True, log_to_console=verbose, rank=rank, **kwargs)
