"""Parsed filters and order-by terms as SQLAlchemy expressions (every value a bound parameter), and
the search that returns one DataFrame row per run."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    Float,
    Integer,
    Text,
    and_,
    any_,
    bindparam,
    case,
    cast,
    exists,
    false,
    func,
    literal,
    not_,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from ..format.run_summary import RUNNING, STALE, STALE_AFTER_BEATS
from .filters import And, Condition, Field, Node, Or, OrderItem
from .schema import metrics, params, runs, tags
from .writing import chunks, under

__all__ = ["BASE_COLUMNS", "LIKE_ESCAPE", "check_max_results", "check_offset", "matching", "search", "utc_times"]

BASE_COLUMNS = ("run_id", "name", "url", "status", "start_time", "end_time", "duration_seconds")
_TEXT_ATTRIBUTES = ("run_id", "name", "url", "status")
_TIME_ATTRIBUTES = ("start_time", "end_time")
_MLFLOW_STATUS = {"finished": "completed", "killed": "interrupted"}  # MLflow's names for the logger's statuses
LIKE_ESCAPE = "\\"  # in LIKE patterns \% and \_ stand for % and _ themselves, on every database
_COMPARE = {"=": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}


def _fail(cond: Condition, message: str) -> ValueError:
    return ValueError(f"invalid filter at position {cond.position}: {message}")


def _name(f: Field) -> str:
    return f.key if f.kind == "attributes" else f"{f.kind}.{f.key}"


def _values(cond: Condition) -> list[Any]:
    value = cond.value
    return list(value) if isinstance(value, tuple) else [value]


def _compare(column: Any, cond: Condition, value: Any) -> Any:
    """`column <op> value` for the operators of one bound value (or list of values)."""
    op = cond.op
    if op in _COMPARE:
        return getattr(column, _COMPARE[op])(value)
    if op in ("LIKE", "NOT LIKE"):
        clause = column.like(value, escape=LIKE_ESCAPE)
    elif op in ("ILIKE", "NOT ILIKE"):
        clause = column.ilike(value, escape=LIKE_ESCAPE)
    else:  # IN, NOT IN
        clause = column.in_(value)
    return not_(clause) if op.startswith("NOT") else clause


class _Compiler:
    """Turns one filter's conditions into SQL over the runs table, for runs under one root."""

    def __init__(self, prefix: str, now: float):
        self.prefix = prefix
        stale = and_(runs.c.status == RUNNING, runs.c.heartbeat_time.is_not(None), runs.c.heartbeat_seconds.is_not(None),
                     literal(now, Float) - runs.c.heartbeat_time > STALE_AFTER_BEATS * runs.c.heartbeat_seconds)
        self.attributes = {
            "run_id": func.substr(runs.c.uid, len(prefix) + 1), "name": runs.c.name, "url": runs.c.url,
            "status": case((stale, STALE), else_=runs.c.status),
            "start_time": runs.c.start_time, "end_time": runs.c.end_time, "duration_seconds": runs.c.duration_seconds,
        }

    def node(self, node: Node) -> Any:
        if isinstance(node, And):
            return and_(*(self.node(n) for n in node.items))
        if isinstance(node, Or):
            return or_(*(self.node(n) for n in node.items))
        return self.condition(node)

    def condition(self, cond: Condition) -> Any:
        f = cond.field
        if f.kind == "attributes":
            return self.attribute(cond)
        table = {"metrics": metrics, "params": params, "tags": tags}[f.kind]
        keyed = and_(table.c.run == runs.c.id, table.c.key == f.key)
        if cond.op in ("IS NULL", "IS NOT NULL"):
            found = exists().where(keyed)
            return not_(found) if cond.op == "IS NULL" else found
        values = _values(cond)
        numeric = all(isinstance(v, float) for v in values)
        if not numeric and any(isinstance(v, float) for v in values):
            raise _fail(cond, f"the IN list of {_name(f)} mixes numbers and strings")
        if f.kind == "metrics":
            if not numeric or cond.op.endswith("LIKE"):
                raise _fail(cond, f"{_name(f)} is a metric: compare it with a number (=, !=, <, <=, >, >=, IN), "
                                  f"got {cond.value!r:.80}")
            column = table.c.value
        elif f.kind == "params":
            if numeric and cond.op.endswith("LIKE"):
                raise _fail(cond, f"{cond.op} takes a quoted pattern")
            column = table.c.num if numeric else table.c.value
        else:
            if numeric:
                raise _fail(cond, f"{_name(f)} is a tag: compare it with a quoted string, got {cond.value!r:.80}")
            column = table.c.value
        value = values if cond.op.endswith("IN") else values[0]
        return exists().where(keyed, _compare(column, cond, value))

    def attribute(self, cond: Condition) -> Any:
        key = cond.field.key
        column = self.attributes[key]
        if cond.op in ("IS NULL", "IS NOT NULL"):
            return column.is_(None) if cond.op == "IS NULL" else column.is_not(None)
        values = _values(cond)
        if key in _TEXT_ATTRIBUTES:
            if not all(isinstance(v, str) for v in values):
                raise _fail(cond, f"{key} is text: compare it with a quoted string, got {cond.value!r:.80}")
            if key == "status" and cond.op in ("=", "!=", "IN", "NOT IN"):
                column = func.lower(column)
                values = [_MLFLOW_STATUS.get(v.lower(), v.lower()) for v in values]
        else:
            if cond.op.endswith("LIKE"):
                raise _fail(cond, f"{key} is a number or time: LIKE and ILIKE compare text")
            values = [_seconds(cond, v) if key in _TIME_ATTRIBUTES else _number(cond, v) for v in values]
        value = values if cond.op.endswith("IN") else values[0]
        return and_(column.is_not(None), _compare(column, cond, value))

    def order(self, item: OrderItem, joins: list[Any]) -> list[Any]:
        """The ORDER BY expressions of one term (NULLs last), adding the outer join it needs to `joins`."""
        f = item.field
        if f.kind == "attributes":
            exprs = [self.attributes[f.key]]
        else:
            table = {"metrics": metrics, "params": params, "tags": tags}[f.kind].alias(f"o{len(joins)}")
            joins.append((table, and_(table.c.run == runs.c.id, table.c.key == f.key)))
            exprs = [table.c.num, table.c.value] if f.kind == "params" else [table.c.value]
        out = []
        for expr in exprs:
            out += [case((expr.is_(None), 1), else_=0), expr.asc() if item.ascending else expr.desc()]
        return out


def _number(cond: Condition, value: Any) -> float:
    if not isinstance(value, float):
        raise _fail(cond, f"{cond.field.key} is a number: compare it with a number, got {value!r:.80}")
    return value


def _seconds(cond: Condition, value: Any) -> float:
    """A time value: unix seconds, or an ISO time (UTC when it names no offset)."""
    if isinstance(value, float):
        return value
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise _fail(cond, f"{cond.field.key} is a time: give unix seconds or an ISO time such as '2025-01-31T12:00', "
                          f"got {value!r:.80}") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()


def check_max_results(max_results: Any) -> int | None:
    """`max_results` if it is None or an int >= 0, else `ValueError` naming it."""
    if max_results is None or (isinstance(max_results, int) and not isinstance(max_results, bool) and max_results >= 0):
        return max_results
    raise ValueError(f"max_results must be None or an int >= 0, got {max_results!r}")


def check_offset(offset: Any) -> int:
    """`offset` if it is an int >= 0, else `ValueError` naming it."""
    if isinstance(offset, int) and not isinstance(offset, bool) and offset >= 0:
        return offset
    raise ValueError(f"offset must be an int >= 0, got {offset!r}")


def _selected(conn: Connection, compiler: _Compiler, prefix: str, where: Node | None, stmt: Any) -> Any:
    """`stmt` restricted to the runs under `prefix` that `where` selects."""
    stmt = stmt.where(under(runs.c.uid, prefix, conn.dialect.name))
    return stmt if where is None else stmt.where(compiler.node(where))


def matching(conn: Connection, prefix: str, where: Node | None) -> tuple[int, dict[str, list[str]]]:
    """(number of runs under `prefix` that `where` selects, {"params"|"metrics"|"tags": their sorted keys})."""
    compiler = _Compiler(prefix, time.time())
    ids = _selected(conn, compiler, prefix, where, select(runs.c.id)).scalar_subquery()
    count = conn.execute(_selected(conn, compiler, prefix, where, select(func.count()).select_from(runs))).scalar_one()
    keys = {kind: list(conn.execute(select(table.c.key).where(table.c.run.in_(ids)).distinct().order_by(table.c.key)).scalars())
            for kind, table in (("params", params), ("metrics", metrics), ("tags", tags))}
    return count, keys


def search(conn: Connection, prefix: str, where: Node | None, order_by: list[OrderItem], max_results: int | None,
           offset: int = 0) -> pd.DataFrame:
    """The runs under `prefix` that `where` selects, ordered (then newest first), from `offset` on, at most
    `max_results`, as a DataFrame."""
    compiler = _Compiler(prefix, time.time())
    a = compiler.attributes
    joins: list[Any] = []
    order = [e for item in order_by for e in compiler.order(item, joins)]
    order += [case((runs.c.start_time.is_(None), 1), else_=0), runs.c.start_time.desc(), runs.c.uid]
    source: Any = runs
    for table, on in joins:
        source = source.outerjoin(table, on)
    stmt = _selected(conn, compiler, prefix, where, select(runs.c.id, *(a[c].label(c) for c in BASE_COLUMNS)).select_from(source))
    if offset:
        stmt = stmt.offset(offset)
    if max_results is not None:
        stmt = stmt.limit(max_results) if max_results else stmt.where(false())
    rows = conn.execute(stmt.order_by(*order)).all()
    ids = [row.id for row in rows]
    extra: dict[str, dict[int, Any]] = {}
    numeric_params: dict[str, bool] = {}
    for part in chunks(ids):  # the params, metrics and tags of the runs found, in one round trip
        for kind, run, key, text, number in conn.execute(_fields(part, conn.dialect.name)).all():
            column = extra.get(f"{kind}.{key}")
            if column is None:
                column = extra[f"{kind}.{key}"] = {}
            column[run] = number if kind == "metrics" else text
            if kind == "params" and number is None:
                numeric_params[key] = False
    return _frame(rows, ids, extra, numeric_params)


def _fields(ids: Sequence[int], dialect: str) -> Any:
    """SQL: (kind, run, key, text, number) of every param, metric and tag of the runs `ids` (on PostgreSQL bound
    as one array: the driver then sends a short statement it has parsed before, not a placeholder per run)."""
    no_text, no_number = cast(null(), Text), cast(null(), Float)
    one_of = any_(bindparam("ids", list(ids), type_=postgresql.ARRAY(Integer))) if dialect == "postgresql" else None

    def of_runs(table: Any) -> Any:
        return table.c.run.in_(ids) if one_of is None else table.c.run == one_of

    return union_all(
        select(literal("params"), params.c.run, params.c.key, params.c.value, params.c.num).where(of_runs(params)),
        select(literal("metrics"), metrics.c.run, metrics.c.key, no_text, metrics.c.value).where(of_runs(metrics)),
        select(literal("tags"), tags.c.run, tags.c.key, tags.c.value, no_number).where(of_runs(tags)),
    )


def utc_times(seconds: list[float | None]) -> pd.Series:
    """Unix seconds as UTC datetimes, to the microsecond the logs write (no float noise in the nanoseconds)."""
    micros = pd.Series(seconds, dtype="float64").mul(1e6).round()
    return pd.to_datetime(micros, unit="us", utc=True).astype("datetime64[ns, UTC]")


_STRING = pd.StringDtype()
_NAN = float("nan")


def _floats(values: list[Any]) -> np.ndarray:
    """Numbers (None: NaN) as a float64 array, built without pandas' per-call dtype lookups."""
    return np.fromiter((_NAN if v is None else float(v) for v in values), dtype=np.float64, count=len(values))


def _frame(rows: list[Any], ids: list[int], extra: dict[str, dict[int, Any]], numeric_params: dict[str, bool]) -> pd.DataFrame:
    """The result DataFrame: the base columns, then params.*, metrics.*, tags.* (each sorted), with their dtypes."""
    data: dict[str, Any] = {
        "run_id": pd.array([r.run_id for r in rows], dtype=_STRING),
        "name": pd.array([r.name for r in rows], dtype=_STRING),
        "url": pd.array([r.url for r in rows], dtype=_STRING),
        "status": pd.array([r.status for r in rows], dtype=_STRING),
        "start_time": utc_times([r.start_time for r in rows]),
        "end_time": utc_times([r.end_time for r in rows]),
        "duration_seconds": _floats([r.duration_seconds for r in rows]),
    }
    for column in sorted(extra, key=lambda c: (("params.", "metrics.", "tags.").index(c[: c.index(".") + 1]), c)):
        values = [extra[column].get(i) for i in ids]
        if column.startswith("metrics.") or (column.startswith("params.") and numeric_params.get(column[7:], True)):
            data[column] = _floats(values)
        else:
            data[column] = pd.array(values, dtype=_STRING)
    return pd.DataFrame(data, copy=False)
