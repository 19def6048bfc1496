"""Catalog URLs to SQLAlchemy engines: where the embedded SQLite file lives, SQLite's locking set-up,
PostgreSQL through psycopg 3, and an unreachable database as `BackendUnavailable` naming it."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect, select
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from ..errors import BackendUnavailable
from .schema import catalog_state, metadata, metric_history

__all__ = ["CATALOG_ENV", "CONNECT_TIMEOUT", "connect", "default_catalog_url", "shown_url", "writing"]

CATALOG_ENV = "EXPSTORE_CATALOG"
CONNECT_TIMEOUT = 5  # seconds to reach a database server
SQLITE_BUSY_TIMEOUT = 30.0  # seconds a writer waits for another process's write lock
_WRITE = "expstore_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


def default_catalog_url() -> str:
    """The embedded catalog: ``$XDG_CACHE_HOME/expstore/catalog.sqlite`` (default ``~/.cache``), one per user for every root."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(cache) / "expstore"
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'catalog.sqlite'}"


def shown_url(url: URL | str) -> str:
    """A catalog URL as errors show it: the password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return str(url)


def _parsed(url: str) -> URL:
    """The SQLAlchemy URL of a catalog URL: ``postgresql://`` goes through psycopg 3; `ValueError` for anything else."""
    if not isinstance(url, str):
        raise TypeError(f"a catalog URL must be a str such as 'sqlite:///runs.db', got {type(url).__name__}")
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"not a catalog URL: {url!r} (expected sqlite:///path.db or postgresql://user@host:port/db)") from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported catalog database {shown_url(parsed)!r}: use sqlite:///path.db or postgresql://...")
    return parsed


def _sqlite_setup(engine: Engine) -> None:
    """WAL, a busy timeout and case-sensitive LIKE on every connection; write transactions take the write lock at BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, not by the driver
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; a power cut may lose the last sync, redone by the next
        cursor.execute("PRAGMA cache_size = -65536")  # 64 MiB of pages: the bulk index inserts of a first sync stay in memory
        cursor.execute("PRAGMA foreign_keys = OFF")  # declared, not checked per row: the catalog deletes dependents itself
        cursor.execute("PRAGMA case_sensitive_like = ON")  # LIKE as on PostgreSQL; ILIKE ignores case
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(_WRITE)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def connect(url: str | None) -> Engine:
    """An engine on the catalog at `url` (None: `EXPSTORE_CATALOG`, else the embedded SQLite file), its tables
    created if missing; `BackendUnavailable` naming the URL when the database cannot be reached."""
    text = url if url is not None else (os.environ.get(CATALOG_ENV) or default_catalog_url())
    parsed = _parsed(text)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).parent.is_dir():
            raise BackendUnavailable(f"cannot open the catalog: folder {str(Path(path).parent)!r} does not exist",
                                     url=shown_url(parsed))
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
        _sqlite_setup(engine)
    else:
        try:
            # prepare_threshold=None: no server-side prepared statements, whose generic plans ignore the filter's values
            engine = create_engine(parsed, connect_args={"connect_timeout": CONNECT_TIMEOUT, "prepare_threshold": None},
                                   pool_pre_ping=True)
        except NoSuchModuleError as exc:
            raise BackendUnavailable(f"no driver for this catalog ({exc}): pip install 'expstore[postgres]'",
                                     url=shown_url(parsed)) from None
    _create_tables(engine, parsed)
    return engine


def _create_tables(engine: Engine, parsed: URL) -> None:
    """Create the tables that are missing; several processes may race on it (PostgreSQL then reports a duplicate)."""
    for attempt in range(3):
        try:
            with writing(engine, changes_runs=False) as conn:
                _drop_outdated(conn)
                metadata.create_all(conn, checkfirst=True)
                if conn.execute(select(catalog_state.c.id)).first() is None:
                    conn.execute(catalog_state.insert().values(id=1, generation=0))
            return
        except DBAPIError as exc:
            if exc.connection_invalidated or _unreachable(exc) or attempt == 2:
                engine.dispose()
                message = f"cannot reach the catalog database: {exc.orig}".strip()
                raise BackendUnavailable(message, url=shown_url(parsed)) from None
            time.sleep(0.05 * (attempt + 1))  # another process created them meanwhile: check again


def _drop_outdated(conn: Connection) -> None:
    """Drop a metric-history table without its `source` column (older catalogs created it and left it
    empty), so that `create_all` makes it anew; nothing else is ever dropped."""
    inspector = inspect(conn)
    if inspector.has_table(metric_history.name):
        if "source" not in {column["name"] for column in inspector.get_columns(metric_history.name)}:
            metric_history.drop(conn)


def _unreachable(exc: DBAPIError) -> bool:
    """Whether `exc` says the database itself cannot be used (no server, no file), not a race on creating tables."""
    text = str(exc.orig).lower()
    return any(s in text for s in ("connect", "unable to open", "timeout", "refused", "authentication", "does not exist"))


@contextlib.contextmanager
def writing(engine: Engine, *, changes_runs: bool = True) -> Iterator[Connection]:
    """A transaction that writes (on SQLite it takes the write lock at BEGIN, so that it waits rather than fails).
    One that `changes_runs` bumps the catalog's generation as it ends, so no remembered listing vouches for it."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn
            if changes_runs:  # last: the row lock on PostgreSQL is held only for the commit
                conn.execute(catalog_state.update().where(catalog_state.c.id == 1)
                             .values(generation=catalog_state.c.generation + 1))
