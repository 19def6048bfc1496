"""Upserting runs into the catalog's tables: one code path, with each dialect's INSERT ... ON CONFLICT."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Column, Table, and_, delete, func
from sqlalchemy.engine import Connection

from .records import RunRecord, param_text
from .schema import history_sources, metric_history, metrics, params, runs, summaries, tags

__all__ = ["CHUNK", "chunks", "delete_runs", "dialect_insert", "forget_summaries", "insert_rows", "key_under", "replace_summaries",
           "under", "upsert_runs"]

CHUNK = 500  # ids per IN (...) list, well under every driver's limit of bound parameters
_RUN_FIELDS = ("name", "url", "status", "start_time", "end_time", "duration_seconds", "heartbeat_time", "heartbeat_seconds")


def under(column: Any, prefix: str, dialect: str) -> Any:
    """SQL: `column` starts with `prefix`, a folder URL ending in ``/``: a range of code-point order (``prefix`` <=
    value < ``prefix`` with its ``/`` raised to ``0``) that indexes and row estimates understand, and no LIKE
    wildcards apply to. PostgreSQL compares in the "C" collation (code points), SQLite's own order is that."""
    if not prefix.endswith("/"):
        return func.substr(column, 1, len(prefix)) == prefix
    ordered = column.collate("C") if dialect == "postgresql" else column
    return and_(ordered >= prefix, ordered < f"{prefix[:-1]}0")


def key_under(column: Any, prefix: str) -> Any:
    """SQL: the store key in a URL column under `prefix` (a URL is its root's prefix followed by the key)."""
    return func.substr(column, len(prefix) + 1)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """`items` in slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def dialect_insert(conn: Connection) -> Any:
    """The dialect's `insert` that knows ON CONFLICT (SQLite and PostgreSQL spell it the same in SQLAlchemy)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _float(value: Any) -> float | None:
    """A finite float or None (SQLite keeps no NaN, so neither database is given one)."""
    if value is None:
        return None
    number = float(value)
    return number if number == number else None


def upsert_runs(conn: Connection, records: Sequence[RunRecord]) -> dict[str, int]:
    """Insert or replace `records` (their params, metrics and tags replaced as a whole); uid -> row id."""
    insert = dialect_insert(conn)
    ids: dict[str, int] = {}
    records = sorted(records, key=lambda r: r.uid)  # one lock order for every writer (no deadlock on PostgreSQL)
    rows = []
    for record in records:
        row = {"uid": record.uid, **{f: getattr(record, f) for f in _RUN_FIELDS}}
        for f in ("start_time", "end_time", "duration_seconds", "heartbeat_time", "heartbeat_seconds"):
            row[f] = _float(row[f])
        rows.append(row)
    if rows:  # executemany with RETURNING: SQLAlchemy sends the rows in batches ("insertmanyvalues"), not one per run
        stmt = insert(runs)
        stmt = stmt.on_conflict_do_update(index_elements=[runs.c.uid], set_={f: stmt.excluded[f] for f in _RUN_FIELDS})
        ids.update((uid, run_id) for uid, run_id in conn.execute(stmt.returning(runs.c.uid, runs.c.id), rows))
    all_ids = list(ids.values())
    for table in (params, metrics, tags):
        for part in chunks(all_ids):
            conn.execute(delete(table).where(table.c.run.in_(part)))
    param_rows, metric_rows, tag_rows = [], [], []
    for record in records:
        run = ids[record.uid]
        param_rows += [(run, str(key), *param_text(value)) for key, value in record.params.items()]
        metric_rows += [(run, str(k), _float(v)) for k, v in record.metrics.items()]
        tag_rows += [(run, str(k), str(v)) for k, v in record.tags.items()]
    insert_rows(conn, params, ("run", "key", "value", "num"), param_rows)
    insert_rows(conn, metrics, ("run", "key", "value"), metric_rows)
    insert_rows(conn, tags, ("run", "key", "value"), tag_rows)
    return ids


_COPY_TYPES = {"INTEGER": "int4", "BIGINT": "int8", "FLOAT": "float8", "TEXT": "text"}  # SQL type -> binary COPY type


def _copy_type(conn: Connection, column: Column) -> str:
    """The PostgreSQL type that binary COPY sends a column's values as (VARCHAR goes as text)."""
    name = column.type.compile(dialect=conn.dialect).split("(")[0]
    return "text" if name == "VARCHAR" else _COPY_TYPES[name]


def insert_rows(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert many rows (tuples of `columns`) in this transaction, without SQLAlchemy's per-row parameter
    processing: PostgreSQL through binary COPY on the driver's connection (psycopg's executemany sends a
    statement per row), any other database by one driver-level executemany of the compiled INSERT."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        quote = conn.dialect.identifier_preparer.quote
        copy_sql = f"COPY {quote(table.name)} ({', '.join(quote(c) for c in columns)}) FROM STDIN (FORMAT BINARY)"
        with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
            with cursor.copy(copy_sql) as copy:
                copy.set_types([_copy_type(conn, table.c[c]) for c in columns])
                for row in rows:
                    copy.write_row(row)
        return
    compiled = table.insert().compile(dialect=conn.dialect, column_keys=list(columns))
    if compiled.positiontup is not None and list(compiled.positiontup) != list(columns):
        raise AssertionError(f"the compiled INSERT orders its parameters {compiled.positiontup}, not {columns}")
    conn.exec_driver_sql(compiled.string, rows)


def delete_runs(conn: Connection, run_ids: Sequence[int]) -> None:
    """Remove these runs and everything the catalog holds about them."""
    for part in chunks(list(run_ids)):
        for table in (params, metrics, tags, metric_history, history_sources, summaries):
            conn.execute(delete(table).where(table.c.run.in_(part)))
        conn.execute(delete(runs).where(runs.c.id.in_(part)))


def forget_summaries(conn: Connection, run_ids: Sequence[int]) -> None:
    """Drop the summary versions the sync recorded for these runs, so that the next sync reads their summaries."""
    for part in chunks(list(run_ids)):
        conn.execute(delete(summaries).where(summaries.c.run.in_(part)))


def replace_summaries(conn: Connection, run_ids: Sequence[int], rows: list[dict[str, Any]]) -> None:
    """Make `rows` (url, run, version, doc) the summaries of these runs; a row another sync wrote meanwhile is updated."""
    forget_summaries(conn, run_ids)
    if rows:
        stmt = dialect_insert(conn)(summaries)
        cols = ("run", "version", "doc")
        conn.execute(stmt.on_conflict_do_update(index_elements=[summaries.c.url], set_={c: stmt.excluded[c] for c in cols}), rows)
