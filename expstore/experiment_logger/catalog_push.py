"""Push a logger's run to a run catalog (`expstore.catalog`) in the background.

A logger given ``catalog="postgresql://..."`` (or run with ``EXPSTORE_CATALOG`` set) starts one
`CatalogPush`: the training thread only hands it values (the config, each metrics dict, the final
status), and a daemon thread of its own upserts the run with `Catalog.record_run` at most once per
`interval` when something changed, and once more at `finish`. The catalog package (SQLAlchemy, the
database driver) is imported and connected in that thread, never in the caller's.

A catalog that is down, slow or refuses the write never blocks or fails training: the failure
warns once per logger (naming the URL, without its password), later pushes back off, and `finish`
waits for the last push at most `FINISH_TIMEOUT` seconds. The run loses nothing: the store holds
its summary, and the next search syncs the catalog from the store.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import threading
import time
import warnings
from collections.abc import Mapping
from typing import Any

from ..format.run_summary import environment_tags, flatten_params, run_folder
from . import summaries

ENV_VAR = "EXPSTORE_CATALOG"
FINISH_TIMEOUT = 5.0  # seconds `finish` waits for the final push before leaving it to the next sync
MAX_BACKOFF = 30.0
_NUMBERS = (int, float, bool)
_PASSWORD = re.compile(r"(?<=://)([^:/@]*):[^@/]*@")

__all__ = ["ENV_VAR", "FINISH_TIMEOUT", "CatalogPush", "catalog_url", "redact", "start_push"]


def catalog_url(catalog: str | bool | None) -> str | None:
    """The catalog a logger pushes to: `catalog` if a URL, else ``EXPSTORE_CATALOG``; None for none (or ``catalog=False``).

    `TypeError` / `ValueError` naming the argument for anything but a non-empty str, None or False."""
    if catalog is False:
        return None
    if catalog is None:
        return os.environ.get(ENV_VAR) or None
    if not isinstance(catalog, str):
        raise TypeError(f"catalog must be a catalog URL (sqlite:///... or postgresql://...), None or False, got {type(catalog).__name__} {catalog!r:.80}")
    if "://" not in catalog:
        raise ValueError(f"catalog must be a catalog URL such as postgresql://user@host:5432/db, got {catalog!r:.200}")
    return catalog


def redact(url: str) -> str:
    """`url` with any password replaced by ``***``, for messages."""
    return _PASSWORD.sub(r"\1:***@", url)


class CatalogPush:
    """The background pusher of one logger's run (see the module docstring)."""

    def __init__(self, url: str, identity: Mapping[str, Any], *, interval: float = 2.0):
        self.url = url
        self.interval = float(interval)
        self._identity = dict(identity)  # root, run_id, name, url, start_time: the `RunRecord` fields that never change
        self._metrics_in: collections.deque[Mapping[str, Any]] = collections.deque()
        self._metrics: dict[str, float] = {}
        self._config: Mapping[str, Any] | None = None
        self._tags: dict[str, str] = {}
        self._final: dict[str, Any] = {"status": summaries.RUNNING}
        self._dirty = True  # the run is not in the catalog yet
        self._wake = threading.Event()
        self._stopping = False
        self._failures = 0
        self._retry_at = 0.0
        self._warned = False
        self.pushes = 0
        self.last_error: str | None = None
        self._catalog: Any = None
        self._thread = threading.Thread(target=self._run, name=f"expstore-catalog-{identity.get('name')}", daemon=True)
        self._thread.start()

    # ---- training thread: hand over values, never wait ------------------------------------------

    def config(self, config: Mapping[str, Any], environment: Any) -> None:
        """The run's config (already a snapshot), pushed as its params, and the environment that gives its tags."""
        self._config = config
        self._tags.update(environment_tags(environment))
        self._dirty = True

    def metrics(self, metrics: Mapping[str, Any]) -> None:
        """A metrics dict as logged (already a snapshot); the last scalar value of each key is pushed."""
        self._metrics_in.append(metrics)

    def finish(self, status: str, duration_seconds: float, timeout: float = FINISH_TIMEOUT) -> bool:
        """Push the end of the run (status, end time, duration) and stop; False if it did not land within `timeout`."""
        end = self._identity["start_time"] + duration_seconds
        self._final = {"status": status, "end_time": end, "duration_seconds": float(duration_seconds)}
        self._dirty = True
        self.stop()
        self._thread.join(timeout)
        landed = not self._thread.is_alive() and not self._dirty
        if not landed and not self._warned:
            self._warned = True
            warnings.warn(
                f"expstore logger {self._identity['name']!r}: the end of the run did not reach the catalog {redact(self.url)} "
                f"within {timeout:g} s; the next search syncs it from the store", RuntimeWarning, stacklevel=3)
        return landed

    def stop(self) -> None:
        """Let the thread make its last push and end, without waiting for it."""
        self._stopping = True
        self._wake.set()

    # ---- pusher thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stopping
            self._fold_metrics()
            if self._dirty and (stopping or time.monotonic() >= self._retry_at):
                self._push()
            if stopping:
                self._close()
                return

    def _fold_metrics(self) -> None:
        """Move the metrics handed over so far into the last-value map (numbers only, as the catalog keeps them)."""
        queue, latest = self._metrics_in, self._metrics
        while queue:
            for key, value in queue.popleft().items():
                if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
                    value = value.item()  # a numpy or torch scalar
                if isinstance(value, _NUMBERS):
                    latest[str(key)] = float(value)
                    self._dirty = True

    def _push(self) -> None:
        """One upsert of the run as known now; a failure is counted, warned about once, and retried later."""
        self._dirty = False
        try:
            if self._catalog is None:
                from ..catalog import open_catalog

                self._catalog = open_catalog(self.url)
            self._catalog.record_run(self._record())
        except Exception as exc:  # noqa: BLE001 - a catalog failure must never reach training
            self._dirty = True
            self._failed(exc)
            return
        self.pushes += 1
        self._failures = 0

    def _record(self) -> Any:
        """The `RunRecord` of the run as known now: what its summary object says, or newer."""
        from ..catalog import RunRecord

        return RunRecord(
            **self._identity, **self._final,
            params=flatten_params(self._config) if self._config is not None else {},
            metrics=dict(self._metrics), tags=dict(self._tags),
            heartbeat_time=time.time(), heartbeat_seconds=summaries.HEARTBEAT_SECONDS,
        )

    def _failed(self, exc: BaseException) -> None:
        """Remember the error, warn on the first failure of this logger, back off before the next try."""
        self.last_error = f"{type(exc).__name__}: {exc}"
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"expstore logger {self._identity.get('name')!r}: pushing the run to the catalog {redact(self.url)} failed "
                f"({type(exc).__name__}: {exc}); training goes on, and the next search syncs the run from the store",
                RuntimeWarning,
                stacklevel=2,
            )
        self._failures += 1
        self._retry_at = time.monotonic() + min(self.interval * 2 ** (self._failures - 1), MAX_BACKOFF)

    def _close(self) -> None:
        """Release the catalog's connections."""
        if self._catalog is not None:
            with contextlib.suppress(Exception):  # nobody is left to tell
                self._catalog.close()


def start_push(url: str | None, logger: Any, interval: float) -> CatalogPush | None:
    """The pusher of `logger`'s run to the catalog at `url` (from `catalog_url`) when there is one and the logger
    writes files; None otherwise."""
    if url is None or logger.store is None or logger.rank is not None:
        return None  # a run of several ranks reaches the catalog from its summaries, at the next sync
    logs = logger.store.url
    identity = {"root": logs, "run_id": logger.experiment_name, "name": logger.experiment_name,
                "url": run_folder(logs), "start_time": logger.start_time}
    return CatalogPush(url, identity, interval=interval)

