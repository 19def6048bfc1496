"""`Catalog` (one SQL database of runs), `open_catalog` and `search_runs`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pandas as pd
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from ..errors import BackendUnavailable
from ..store.base import Store
from ..store.locate import opened_store
from .engine import connect, shown_url, writing
from .filters import parse_filter, parse_order_by
from .history_query import check_names, history, missing_runs
from .query import check_max_results, check_offset, matching, search
from .records import RunRecord
from .sync import root_prefix, sync_store
from .writing import forget_summaries, upsert_runs

__all__ = ["Catalog", "open_catalog", "search_runs"]


class Catalog:
    """An index of runs in SQLite or PostgreSQL, filled from stores (`sync`) and by loggers (`record_run`)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.url = shown_url(engine.url)

    @contextlib.contextmanager
    def _guarded(self, what: str) -> Iterator[None]:
        """A block in which a database that stops answering raises `BackendUnavailable` naming this catalog."""
        try:
            yield
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            raise BackendUnavailable(f"the catalog database stopped answering during {what}: {exc.orig}", url=self.url) from exc

    def sync(self, root: str | Store, **storage_options: Any) -> None:
        """Bring the runs under `root` (any store URL) up to date: one listing, reading only summaries that changed."""
        with opened_store(root, **storage_options) as store, self._guarded("sync"):
            sync_store(self.engine, store)

    def record_run(self, run: RunRecord) -> None:
        """Insert or replace one run (idempotent; safe from many processes at once). The sync's record of
        the run's summary is dropped, so the next sync reads the summary again: a push that lands after a
        sync of a newer summary can then not stay in the catalog."""
        if not isinstance(run, RunRecord):
            raise TypeError(f"record_run takes a RunRecord, got {type(run).__name__}")
        with self._guarded("record_run"), writing(self.engine) as conn:
            forget_summaries(conn, list(upsert_runs(conn, [run]).values()))

    def search(self, root: str | Store, filter: str | None = None, order_by: list[str] | str | None = None,
               max_results: int | None = None, *, offset: int = 0, **storage_options: Any) -> pd.DataFrame:
        """The runs under `root` that `filter` selects, ordered by `order_by`, skipping the first `offset`,
        at most `max_results` (no sync)."""
        where, order, limit = parse_filter(filter), parse_order_by(order_by), check_max_results(max_results)
        offset = check_offset(offset)
        with self._guarded("search"), self.engine.connect() as conn:
            return search(conn, self._prefix(root, storage_options), where, order, limit, offset)

    def count(self, root: str | Store, filter: str | None = None, **storage_options: Any) -> tuple[int, dict[str, list[str]]]:
        """(how many runs under `root` `filter` selects, their param / metric / tag keys as
        ``{"params": [...], "metrics": [...], "tags": [...]}``), for paging through a search (no sync)."""
        where = parse_filter(filter)
        with self._guarded("count"), self.engine.connect() as conn:
            return matching(conn, self._prefix(root, storage_options), where)

    @staticmethod
    def _prefix(root: str | Store, storage_options: dict[str, Any]) -> str:
        """The catalog's prefix of the runs under `root`."""
        with opened_store(root, **storage_options) as store:
            return root_prefix(store.url)

    def metric_history(self, run_id: str | list[str], keys: str | list[str] | None = None, *, root: str | Store | None = None,
                       **storage_options: Any) -> pd.DataFrame:
        """Every logged point of run `run_id` (or of each run of a list) for metrics `keys` (None: all): columns
        run_id, key, step, timestamp, value, ordered by run, key, step and time. With `root`, a run_id is as
        `search` shows it (relative to root); without, it is the run's identity (its logs folder URL joined
        with its name). No sync: `sync` or `search_runs` fill the history. `KeyError` for a run not catalogued."""
        ids, names = check_names(run_id, "run_id", allow_none=False), check_names(keys, "keys")
        if not ids:
            raise ValueError("metric_history needs at least one run_id")
        if root is None:
            uids = {r: r for r in ids}
        else:
            prefix = self._prefix(root, storage_options)
            uids = {prefix + r: r for r in ids}
        with self._guarded("metric_history"), self.engine.connect() as conn:
            missing = missing_runs(conn, list(uids))
            if missing:
                raise KeyError(f"the catalog {self.url} holds no run {uids[missing[0]]!r}"
                               + (f" under {prefix!r}" if root is not None else " (give root= for a run_id relative to a root)"))
            return history(conn, uids, names)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({self.url!r})"


def open_catalog(url: str | None = None) -> Catalog:
    """The catalog at `url` (``sqlite:///path.db``, ``postgresql://user@host:port/db``); None: the URL in
    ``EXPSTORE_CATALOG``, else the embedded per-user SQLite file. Tables are created when missing."""
    return Catalog(connect(url))


def search_runs(root: str | Store, filter: str | None = None, order_by: list[str] | str | None = None,
                max_results: int | None = None, *, catalog: str | Catalog | None = None, **storage_options: Any) -> pd.DataFrame:
    """Sync the catalog from `root`, then search it: one row per logged run under `root` (DESIGN §8 columns)."""
    parse_filter(filter), parse_order_by(order_by), check_max_results(max_results)  # bad input fails before any I/O
    opened = catalog if isinstance(catalog, Catalog) else open_catalog(catalog)
    try:
        opened.sync(root, **storage_options)
        return opened.search(root, filter, order_by, max_results, **storage_options)
    finally:
        if opened is not catalog:
            opened.close()
