"""The catalog's tables (SQLAlchemy Core), one definition for SQLite and PostgreSQL.

A run is keyed by ``uid``, the URL of its logs folder joined with its experiment name, so a run
pushed by its logger and the same run found by a sync of any root above it are one row.
"""

from __future__ import annotations

from sqlalchemy import DDL, BigInteger, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, event

__all__ = ["catalog_state", "history_sources", "listings", "metadata", "metric_history", "metrics", "params", "runs",
           "summaries", "tags"]

metadata = MetaData()

runs = Table(
    "expstore_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", Text, nullable=False, unique=True),  # join_url(logs folder URL, experiment name)
    Column("name", Text, nullable=False),
    Column("url", Text, nullable=False),  # the run folder (above <run>/logs)
    Column("status", String(64)),  # as recorded; the stale rule is applied when searching
    Column("start_time", Float),  # unix seconds
    Column("end_time", Float),
    Column("duration_seconds", Float),
    Column("heartbeat_time", Float),
    Column("heartbeat_seconds", Float),
)


def _run_column() -> Column:
    """The run a row of params, metrics or tags belongs to: expstore_runs.id without a foreign key (checking
    one per inserted row costs more than the insert; `writing.delete_runs` removes these rows with their run)."""
    return Column("run", Integer, primary_key=True)


params = Table(
    "expstore_params", metadata, _run_column(),
    Column("key", Text, primary_key=True),
    Column("value", Text),  # the logged value as text
    Column("num", Float),  # the value as a number, when it is one
    sqlite_with_rowid=False,  # the primary key is the table: one B-tree less to fill on a first sync
)
metrics = Table(
    "expstore_metrics", metadata, _run_column(),
    Column("key", Text, primary_key=True),
    Column("value", Float),  # the last value
    sqlite_with_rowid=False,
)
tags = Table(
    "expstore_tags", metadata, _run_column(),
    Column("key", Text, primary_key=True),
    Column("value", Text),
    sqlite_with_rowid=False,
)
history_sources = Table(
    "expstore_history_sources", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False, unique=True),  # a structured log or one of its segments
    Column("run", Integer, ForeignKey("expstore_runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("version", Text, nullable=False),  # the store's version token when it was read
    Column("read_bytes", BigInteger, nullable=False),  # bytes read: up to the end of the last complete line
    Column("tail", Text, nullable=False),  # hex of the bytes before `read_bytes`: the source only grew while they are still there
)
metric_history = Table(  # no foreign keys, as for params: points go with their source or run explicitly
    "expstore_metric_history", metadata,
    Column("run", Integer, nullable=False),  # expstore_runs.id
    Column("source", Integer, nullable=False),  # expstore_history_sources.id
    Column("key", Text, nullable=False),
    Column("step", BigInteger),
    Column("timestamp", Float, nullable=False),  # unix seconds
    Column("value", Float),  # None for a value that is not finite
    Index("expstore_metric_history_run_key", "run", "key", "step"),
)
summaries = Table(
    "expstore_summaries", metadata,
    Column("url", Text, primary_key=True),  # the summary object's URL
    Column("run", Integer, ForeignKey("expstore_runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("version", Text, nullable=False),  # the store's version token when it was read
    Column("doc", Text, nullable=False),  # the summary document, for rebuilding a run of several ranks
)
catalog_state = Table(  # one row: the generation, bumped by every transaction that changes the runs or their history
    "expstore_state", metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", BigInteger, nullable=False),
)
listings = Table(  # per root: a digest of the listing the catalog held exactly, valid while the generation is unchanged
    "expstore_listings", metadata,
    Column("prefix", Text, primary_key=True),
    Column("digest", Text, nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("runs", Integer, nullable=False),
)
Index("expstore_params_key_num", params.c.key, params.c.num)
Index("expstore_metrics_key_value", metrics.c.key, metrics.c.value)

# PostgreSQL's planner takes a param's key and value as independent: it would expect `optimizer = 'adam'` to
# match a few runs where it matches a third of them, and probe every run one by one. Statistics of the
# (key, value) pairs' most common values let it see how many runs a filter on a param selects.
event.listen(params, "after_create", DDL(
    "CREATE STATISTICS IF NOT EXISTS expstore_params_key_value (mcv) ON key, value FROM expstore_params",
).execute_if(dialect="postgresql"))
