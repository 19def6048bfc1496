"""The sync of the metric-history tables: the sources the listing shows changed are read (from where
the last read stopped when they only grew), their points written once; sources gone take their points.
Reading (`read_history`) may overlap the writing of the runs; `write_history` then keeps the sources of
runs that are catalogued."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, select
from sqlalchemy.engine import Connection, Engine

from ..store.base import Store
from .engine import writing
from .history import Known, Read, changed_sources, read_source, summary_of
from .schema import history_sources, metric_history, summaries
from .writing import BULK, chunks, insert_rows, key_under, refresh_statistics, under, upsert_rows

__all__ = ["Pending", "held_sources", "known_sources", "read_history", "write_history"]


def held_sources(conn: Connection, prefix: str) -> dict[str, str]:
    """{store key: version token} of the history sources under `prefix` the catalog has read."""
    c = history_sources.c
    return dict(conn.execute(select(key_under(c.url, prefix), c.version).where(under(c.url, prefix, conn.dialect.name))).all())


def known_sources(conn: Connection, prefix: str) -> dict[str, Known]:
    """{store key: what the catalog kept} of the history sources under `prefix`."""
    c = history_sources.c
    stmt = (select(key_under(c.url, prefix), c.id, c.run, c.version, c.read_bytes, c.tail)
            .where(under(c.url, prefix, conn.dialect.name)))
    return {key: Known(id, run, version, read_bytes, tail) for key, id, run, version, read_bytes, tail in conn.execute(stmt)}


def _current(conn: Connection, urls: list[str], lock: bool) -> dict[str, tuple[int, str, int]]:
    """url -> (id, version, read_bytes) of these sources as the catalog holds them now (locked for this transaction)."""
    c = history_sources.c
    out: dict[str, tuple[int, str, int]] = {}
    for part in chunks(urls):
        stmt = select(c.url, c.id, c.version, c.read_bytes).where(c.url.in_(part))
        out.update((url, (id, version, read_bytes)) for url, id, version, read_bytes in
                   conn.execute(stmt.with_for_update() if lock else stmt))
    return out


@dataclass
class Pending:
    """The history sources a sync read, before it knows which runs they belong to."""

    known: dict[str, Known]
    reads: list[tuple[str, Read | None]]
    gone: list[str]


def read_history(engine: Engine, store: Store, prefix: str, listed: Mapping[str, str], held: Mapping[str, str],
                 mapper: Callable[[Callable[[Any], Any], list[Any]], list[Any]]) -> Pending | None:
    """Read the sources that `listed` (the sync's one listing) shows changed against `held` (`held_sources`),
    those of a listed summary only; None when none changed or went. `mapper` maps a function over items (in
    threads on a remote store). Safe to run while the runs are written: `write_history` checks again."""
    changed, gone = changed_sources(listed, held)
    if not changed and not gone:
        return None
    with engine.connect() as conn:
        known = known_sources(conn, prefix) if held else {}
    todo = [key for key in changed if summary_of(key) in listed]
    return Pending(known, list(zip(todo, mapper(lambda key: read_source(store, key, known.get(key)), todo), strict=True)), gone)


def write_history(engine: Engine, prefix: str, listed: Mapping[str, str], pending: Pending | None) -> dict[str, int]:
    """Write what `read_history` read, for the runs now catalogued; counts of sources ``read`` and ``removed``
    and of ``points`` written."""
    if pending is None:
        return {"read": 0, "removed": 0, "points": 0}
    known = pending.known
    with engine.connect() as conn:
        run_of = dict(conn.execute(select(key_under(summaries.c.url, prefix), summaries.c.run)
                                   .where(under(summaries.c.url, prefix, conn.dialect.name))).all())
    gone = [known[key] for key in pending.gone if key in known]
    gone += [known[key] for key, read in pending.reads if read is None and key in known]
    done = [(run, read) for key, read in pending.reads if read is not None and (run := run_of.get(summary_of(key))) is not None]
    with writing(engine) as conn:
        points = _write(conn, prefix, known, gone, done, listed)
    if points >= 100 * BULK:
        refresh_statistics(engine, [metric_history, history_sources])
    return {"read": len(pending.reads), "removed": len(gone), "points": points}


def _drop_points(conn: Connection, sources: list[Known]) -> None:
    """Delete the points of these sources (by run and source: the history table's index starts with the run)."""
    if sources:
        h = metric_history.c
        conn.execute(delete(metric_history).where(h.run == bindparam("b_run"), h.source == bindparam("b_source")),
                     [{"b_run": s.run, "b_source": s.id} for s in sources])


def _write(conn: Connection, prefix: str, known: Mapping[str, Known], gone: list[Known],
           done: list[tuple[int, Read]], listed: Mapping[str, str]) -> int:
    """Apply the reads in one transaction; a source another sync wrote since it was read here is left to it."""
    _drop_points(conn, gone)
    for part in chunks([s.id for s in gone]):
        conn.execute(delete(history_sources).where(history_sources.c.id.in_(part)))
    now = _current(conn, [prefix + read.key for _, read in done], lock=conn.dialect.name == "postgresql")
    fresh, updated, replaced = [], [], []
    for run, read in done:
        url, base = prefix + read.key, known.get(read.key)
        held = now.get(url)
        if (held is None) != (base is None) or (base is not None and held != (base.id, base.version, base.read_bytes)):
            continue  # another sync changed this source meanwhile: its points are its own
        row = {"url": url, "run": run, "version": listed[read.key], "read_bytes": read.read_bytes, "tail": read.tail}
        if base is None:
            fresh.append((row, read))
        else:
            updated.append(({**row, "id": base.id}, read))
            if read.replace:
                replaced.append(base)
    _drop_points(conn, replaced)
    ids: dict[str, int] = {}
    if fresh:
        columns = ("url", "run", "version", "read_bytes", "tail")
        ids.update(upsert_rows(conn, history_sources, columns, [tuple(r[c] for c in columns) for r, _ in fresh], "url", None,
                               returning=("url", "id")))  # type: ignore[arg-type]
    if updated:
        c = history_sources.c
        conn.execute(history_sources.update().where(c.id == bindparam("b_id")).values(
            version=bindparam("b_version"), read_bytes=bindparam("b_read_bytes"), tail=bindparam("b_tail")),
            [{"b_id": r["id"], "b_version": r["version"], "b_read_bytes": r["read_bytes"], "b_tail": r["tail"]}
             for r, _ in updated])
        ids.update((r["url"], r["id"]) for r, _ in updated)
    rows = [(row["run"], ids[row["url"]], *point) for row, read in fresh + updated if row["url"] in ids for point in read.points]
    insert_rows(conn, metric_history, ("run", "source", "key", "step", "timestamp", "value"), rows)
    return len(rows)
