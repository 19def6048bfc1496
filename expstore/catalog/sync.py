"""Incremental sync of the catalog from a root: one listing, a version check per summary, and a read
only of the summaries whose version changed; runs whose summaries vanished drop out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from ..errors import KeyNotFound
from ..format.run_summary import log_key, parse_summary, split_stem
from ..store.base import Store
from ..store.locate import join_url
from .engine import writing
from .records import record_from_summaries
from .schema import runs, summaries
from .writing import delete_runs, replace_summaries, upsert_runs

__all__ = ["REMOTE_THREADS", "root_prefix", "sync_store"]

REMOTE_THREADS = 16  # parallel version checks and reads on a store that is not a local folder


def root_prefix(root_url: str) -> str:
    """The prefix that the uid of every run under `root_url` starts with."""
    return root_url if root_url.endswith("/") else f"{root_url}/"


def _under(column: Any, prefix: str) -> Any:
    """SQL: `column` starts with `prefix` (compared as a bound substring, so no LIKE wildcards apply)."""
    return func.substr(column, 1, len(prefix)) == prefix


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


def sync_store(engine: Engine, store: Store) -> dict[str, int]:
    """Bring the catalog's runs under `store`'s root up to date; counts of runs ``read``, ``kept`` and ``removed``."""
    root = store.url
    prefix = root_prefix(root)
    listed = store.list_versions("")  # one listing: no request per summary to see it is unchanged
    groups = _summary_keys(listed)
    keys = [key for ranks in groups.values() for key in ranks.values()]
    versions: dict[str, str | None] = {key: listed[key] for key in keys}
    with engine.connect() as conn:
        known = {row.url: (row.version, row.doc, row.uid) for row in conn.execute(
            select(summaries.c.url, summaries.c.version, summaries.c.doc, runs.c.uid)
            .join(runs, runs.c.id == summaries.c.run).where(_under(summaries.c.url, prefix)))}
        catalogued = dict(conn.execute(select(runs.c.uid, runs.c.id).where(_under(runs.c.uid, prefix))).all())
    known_urls: dict[str, set[str]] = {}
    for url, (_, _, uid) in known.items():
        known_urls.setdefault(uid, set()).add(url)
    changed = [k for k in keys if versions[k] is not None and known.get(join_url(root, k), (None,))[0] != versions[k]]
    fresh = dict(zip(changed, _map(store, lambda k: _read(store, k), changed), strict=True))
    records, summary_rows, present = [], [], set()
    for (folder, name), ranks in groups.items():
        uid = join_url(root, f"{folder}/{name}" if folder else name)
        urls = {join_url(root, key) for key in ranks.values()}
        if uid in catalogued and urls == known_urls.get(uid) and not any(key in fresh for key in ranks.values()):
            present.add(uid)  # nothing changed: no summary parsed, nothing written
            continue
        docs: list[tuple[str, Mapping[str, Any]]] = []
        dirty = False
        for rank in sorted(ranks, key=lambda r: -1 if r is None else r):
            key = ranks[rank]
            url = join_url(root, key)
            if key in fresh:
                dirty = True
                if fresh[key] is not None:
                    docs.append((key, fresh[key]))  # type: ignore[arg-type]
            elif versions[key] is not None and url in known:
                docs.append((key, json.loads(known[url][1])))
        if not docs:
            continue
        record = record_from_summaries(root, folder, name, [doc for _, doc in docs])
        present.add(record.uid)
        dirty = dirty or {join_url(root, k) for k, _ in docs} != known_urls.get(record.uid, set())
        if dirty or record.uid not in catalogued:
            records.append(record)
            summary_rows.append((record.uid, [(join_url(root, k), versions[k], json.dumps(doc)) for k, doc in docs]))
    gone = [run_id for uid, run_id in catalogued.items() if uid not in present]
    if records or gone:
        with writing(engine) as conn:
            delete_runs(conn, gone)
            ids = upsert_runs(conn, records)
            rows = [{"url": url, "run": ids[uid], "version": version, "doc": doc}
                    for uid, items in summary_rows for url, version, doc in items]
            replace_summaries(conn, [ids[uid] for uid, _ in summary_rows], rows)
    return {"read": len(changed), "kept": len(present) - len(records), "removed": len(gone)}
