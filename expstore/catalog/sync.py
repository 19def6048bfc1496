"""Incremental sync of the catalog from a root: one listing, a version check per summary, and a read
only of the summaries whose version changed; runs whose summaries vanished drop out. A listing the
catalog was found to hold exactly, with nothing changed since, is recognised by its digest alone. The metric
history follows from the same listing (`history_sync`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import exists, func, select
from sqlalchemy.engine import Connection, Engine

from ..errors import KeyNotFound
from ..format.run_summary import SUMMARY_SUFFIX, log_key, parse_summary, split_stem
from ..store.base import Store
from ..store.locate import join_url
from .engine import writing
from .history_sync import held_sources, read_history, write_history
from .listing_digest import generation, listing_digest, remember_listing, vouched_runs
from .records import record_from_summaries
from .schema import metrics, params, runs, summaries, tags
from .writing import BULK, chunks, delete_runs, key_under, refresh_statistics, replace_summaries, under, upsert_runs

__all__ = ["REMOTE_THREADS", "root_prefix", "sync_store"]

REMOTE_THREADS = 16  # parallel version checks and reads on a store that is not a local folder


def root_prefix(root_url: str) -> str:
    """The prefix that the uid of every run under `root_url` starts with."""
    return root_url if root_url.endswith("/") else f"{root_url}/"


def _summary_keys(keys: list[str]) -> dict[tuple[str, str], dict[int | None, str]]:
    """(folder, experiment name) -> rank -> summary key, from one listing."""
    groups: dict[tuple[str, str], dict[int | None, str]] = {}
    for key in keys:
        found = log_key(key)
        if found is not None and found[2]:
            name, rank = split_stem(found[1])
            groups.setdefault((found[0], name), {})[rank] = key
    return groups


def _map(store: Store, fn: Any, items: list[str]) -> list[Any]:
    """`fn` over `items`, in threads on a remote store (each call is a round trip there)."""
    if len(items) < 2 or store.local_path(items[0]) is not None:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(REMOTE_THREADS) as pool:
        return list(pool.map(fn, items))


def _read(store: Store, key: str) -> dict[str, Any] | None:
    try:
        return parse_summary(store.read(key))
    except KeyNotFound:
        return None


@dataclass(frozen=True)
class _Held:
    """What the catalog holds under a root, for comparing with a listing: the generation it was read at,
    the summaries' and the history sources' {key: version}, and how many runs there are and how many of
    them have no summary."""

    generation: int
    summaries: dict[str, str]
    sources: dict[str, str]
    runs: int
    orphans: int


def _held(engine: Engine, prefix: str) -> _Held:
    """The catalog's side of a no-change check, in a few queries and no documents."""
    c = summaries.c
    has_summary = exists().where(summaries.c.run == runs.c.id)
    with engine.connect() as conn:
        at = generation(conn)  # first: a change committed after it makes what is remembered below invalid
        dialect = conn.dialect.name
        versions = dict(conn.execute(select(key_under(c.url, prefix), c.version).where(under(c.url, prefix, dialect))).all())
        counted = select(func.count(), func.count().filter(~has_summary)).where(under(runs.c.uid, prefix, dialect))
        total, orphans = conn.execute(counted).one()
        return _Held(at, versions, held_sources(conn, prefix), total, orphans)


def _docs(conn: Connection, urls: list[str]) -> dict[str, Any]:
    """The summary documents the catalog kept for these summary URLs."""
    out: dict[str, Any] = {}
    for part in chunks(urls):
        stmt = select(summaries.c.url, summaries.c.doc).where(summaries.c.url.in_(part))
        out.update((url, json.loads(doc)) for url, doc in conn.execute(stmt))
    return out


def sync_store(engine: Engine, store: Store) -> dict[str, int]:
    """Bring the catalog's runs under `store`'s root, and their metric history, up to date; counts of runs
    ``read``, ``kept`` and ``removed``, and of history sources read (``history_read``)."""
    prefix = root_prefix(store.url)
    listed = store.list_versions("")  # one listing: no request per summary to see it is unchanged
    digest = listing_digest(listed)
    runs = vouched_runs(engine, prefix, digest)
    if runs is not None:  # the catalog held exactly this listing and nothing changed it since
        return {"read": 0, "kept": runs, "removed": 0, "history_read": 0}
    held = _held(engine, prefix)
    unchanged = held.orphans == 0 and held.summaries == {k: v for k, v in listed.items() if k.endswith(SUMMARY_SUFFIX)}
    with ThreadPoolExecutor(1) as pool:  # the changed logs are read and parsed while the runs are written
        reading = pool.submit(read_history, engine, store, prefix, listed, held.sources, lambda fn, items: _map(store, fn, items))
        counts = {"read": 0, "kept": held.runs, "removed": 0} if unchanged else _sync_summaries(engine, store, listed)
        pending = reading.result()
    if unchanged and pending is None:
        remember_listing(engine, prefix, digest, held.generation, held.runs)
    history = write_history(engine, prefix, listed, pending)
    return {**counts, "history_read": history["read"]}


def _sync_summaries(engine: Engine, store: Store, listed: Mapping[str, str]) -> dict[str, int]:
    """The runs part of `sync_store`: group the listed summaries by run, read the changed ones, write what changed."""
    root = store.url
    prefix = root_prefix(root)
    groups = _summary_keys(list(listed))
    keys = [key for ranks in groups.values() for key in ranks.values()]
    with engine.connect() as conn:
        known = {row.url: (row.version, row.uid) for row in conn.execute(
            select(summaries.c.url, summaries.c.version, runs.c.uid)
            .join(runs, runs.c.id == summaries.c.run).where(under(summaries.c.url, prefix, conn.dialect.name)))}
        catalogued = dict(conn.execute(select(runs.c.uid, runs.c.id).where(under(runs.c.uid, prefix, conn.dialect.name))).all())
    known_urls: dict[str, set[str]] = {}
    for url, (_, uid) in known.items():
        known_urls.setdefault(uid, set()).add(url)
    changed = [k for k in keys if known.get(join_url(root, k), (None,))[0] != listed[k]]
    fresh = dict(zip(changed, _map(store, lambda k: _read(store, k), changed), strict=True))
    todo = []
    present = set()
    for (folder, name), ranks in groups.items():
        uid = join_url(root, f"{folder}/{name}" if folder else name)
        urls = {join_url(root, key) for key in ranks.values()}
        if uid in catalogued and urls == known_urls.get(uid) and not any(key in fresh for key in ranks.values()):
            present.add(uid)  # nothing changed: no summary parsed, nothing written
        else:
            todo.append((folder, name, ranks))
    with engine.connect() as conn:  # the kept documents of the other ranks of runs that changed
        kept = _docs(conn, [join_url(root, k) for _, _, ranks in todo for k in ranks.values()
                            if k not in fresh and join_url(root, k) in known])
    records, summary_rows = [], []
    for folder, name, ranks in todo:
        docs: list[tuple[str, Mapping[str, Any]]] = []
        dirty = False
        for rank in sorted(ranks, key=lambda r: -1 if r is None else r):
            key = ranks[rank]
            url = join_url(root, key)
            if key in fresh:
                dirty = True
                if fresh[key] is not None:
                    docs.append((key, fresh[key]))  # type: ignore[arg-type]
            elif url in kept:
                docs.append((key, kept[url]))
        if not docs:
            continue
        record = record_from_summaries(root, folder, name, [doc for _, doc in docs])
        present.add(record.uid)
        dirty = dirty or {join_url(root, k) for k, _ in docs} != known_urls.get(record.uid, set())
        if dirty or record.uid not in catalogued:
            records.append(record)
            summary_rows.append((record.uid, [(join_url(root, k), listed[k], json.dumps(doc)) for k, doc in docs]))
    gone = [run_id for uid, run_id in catalogued.items() if uid not in present]
    if records or gone:
        with writing(engine) as conn:
            delete_runs(conn, gone)
            ids = upsert_runs(conn, records)
            rows = [{"url": url, "run": ids[uid], "version": version, "doc": doc}
                    for uid, items in summary_rows for url, version, doc in items]
            replace_summaries(conn, [ids[uid] for uid, _ in summary_rows], rows)
        if len(records) + len(gone) >= BULK:
            refresh_statistics(engine, [runs, params, metrics, tags, summaries])
    return {"read": len(changed), "kept": len(present) - len(records), "removed": len(gone)}
