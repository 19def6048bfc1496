"""Upserting runs into the catalog's tables: one code path, with each dialect's INSERT ... ON CONFLICT."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Column, Table, and_, delete, func
from sqlalchemy.engine import Connection, Engine

from .records import RunRecord, param_text
from .schema import history_sources, metric_history, metrics, params, runs, summaries, tags

__all__ = ["BULK", "CHUNK", "chunks", "delete_runs", "dialect_insert", "forget_summaries", "insert_rows", "key_under",
           "refresh_statistics", "replace_summaries", "under", "upsert_rows", "upsert_runs"]

CHUNK = 500  # ids per IN (...) list, well under every driver's limit of bound parameters
BULK = 1000  # runs (or this many times 100 history points) written by one sync that call for fresh planner statistics
_RUN_FIELDS = ("name", "url", "status", "start_time", "end_time", "duration_seconds", "heartbeat_time", "heartbeat_seconds")
_TIMES = frozenset(_RUN_FIELDS[3:])


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
    ids: dict[str, int] = {}
    records = sorted(records, key=lambda r: r.uid)  # one lock order for every writer (no deadlock on PostgreSQL)
    rows = [(record.uid, *(_float(getattr(record, f)) if f in _TIMES else getattr(record, f) for f in _RUN_FIELDS))
            for record in records]
    written = upsert_rows(conn, runs, ("uid", *_RUN_FIELDS), rows, "uid", _RUN_FIELDS, returning=("uid", "id"))
    ids.update(written)  # type: ignore[arg-type]
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


def _copy(conn: Connection, quoted_table: str, columns: Sequence[str], types: list[str], rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL: `rows` into a table by binary COPY on the driver's connection, in this transaction."""
    quote = conn.dialect.identifier_preparer.quote
    with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        with cursor.copy(f"COPY {quoted_table} ({', '.join(quote(c) for c in columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)


def insert_rows(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    """Insert many rows (tuples of `columns`) in this transaction, without SQLAlchemy's per-row parameter
    processing: PostgreSQL through binary COPY on the driver's connection (psycopg's executemany sends a
    statement per row), any other database by one driver-level executemany of the compiled INSERT."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        quote = conn.dialect.identifier_preparer.quote
        _copy(conn, quote(table.name), columns, [_copy_type(conn, table.c[c]) for c in columns], rows)
        return
    compiled = table.insert().compile(dialect=conn.dialect, column_keys=list(columns))
    if compiled.positiontup is not None and list(compiled.positiontup) != list(columns):
        raise AssertionError(f"the compiled INSERT orders its parameters {compiled.positiontup}, not {columns}")
    conn.exec_driver_sql(compiled.string, rows)


def upsert_rows(conn: Connection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]], key: str,
                update: Sequence[str] | None, returning: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """Insert `rows` (tuples of `columns`); a row whose `key` is taken updates the `update` columns (None: is
    skipped); the `returning` columns of every row written. PostgreSQL: binary COPY into a temporary table,
    then one INSERT ... SELECT ... ON CONFLICT in key order (psycopg spends seconds parsing the many-VALUES
    statements otherwise); elsewhere one executemany of INSERT ... ON CONFLICT."""
    if not rows:
        return []
    if conn.dialect.name != "postgresql":
        stmt = dialect_insert(conn)(table)
        stmt = (stmt.on_conflict_do_nothing(index_elements=[key]) if update is None else
                stmt.on_conflict_do_update(index_elements=[key], set_={c: stmt.excluded[c] for c in update}))
        params = [dict(zip(columns, row, strict=True)) for row in rows]
        if not returning:
            conn.execute(stmt, params)
            return []
        return [tuple(r) for r in conn.execute(stmt.returning(*(table.c[c] for c in returning)), params)]
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    staging = quote(f"{table.name}_staging")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS "
                         f"SELECT {names} FROM {quote(table.name)} WITH NO DATA")
    _copy(conn, staging, columns, [_copy_type(conn, table.c[c]) for c in columns], rows)
    action = ("DO NOTHING" if update is None else
              "DO UPDATE SET " + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in update))
    sql = (f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} FROM {staging} ORDER BY {quote(key)} "
           f"ON CONFLICT ({quote(key)}) {action}" + (f" RETURNING {', '.join(quote(c) for c in returning)}" if returning else ""))
    written = conn.exec_driver_sql(sql)
    out = [tuple(r) for r in written] if returning else []
    conn.exec_driver_sql(f"DROP TABLE {staging}")
    return out


def refresh_statistics(engine: Engine, tables: Sequence[Table]) -> None:
    """After a bulk write, let PostgreSQL's planner see the new rows at once (``ANALYZE`` samples each table;
    autovacuum would only do it later, and until then a search may get a nested-loop plan over every run)."""
    if engine.dialect.name == "postgresql":
        quote = engine.dialect.identifier_preparer.quote
        with engine.connect() as conn:
            conn.exec_driver_sql(f"ANALYZE {', '.join(quote(t.name) for t in tables)}")
            conn.commit()


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
    columns = ("url", "run", "version", "doc")
    upsert_rows(conn, summaries, columns, [tuple(row[c] for c in columns) for row in rows], "url", columns[1:])
