"""The fast path of a sync with nothing changed: a digest of the part of a root's listing the catalog is
built from (summaries and history sources, with their versions), remembered when the catalog was found to
hold exactly that listing. It vouches only while the catalog's generation is the one it was remembered at:
every transaction that changes runs or history bumps the generation (`engine.writing`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine

from ..format.run_summary import SUMMARY_SUFFIX
from .engine import writing
from .history import is_source
from .schema import catalog_state, listings
from .writing import dialect_insert

__all__ = ["generation", "listing_digest", "remember_listing", "vouched_runs"]


def listing_digest(listed: Mapping[str, str]) -> str:
    """A digest of the summaries' and history sources' keys and versions in `listed` (one store listing)."""
    parts = [f"{key}\0{version}" for key, version in listed.items() if key.endswith(SUMMARY_SUFFIX) or is_source(key)]
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=20).hexdigest()


def generation(conn: Connection) -> int:
    """The catalog's generation now (read it before what it is to vouch for)."""
    return conn.execute(select(catalog_state.c.generation).where(catalog_state.c.id == 1)).scalar_one()


def vouched_runs(engine: Engine, prefix: str, digest: str) -> int | None:
    """How many runs the catalog holds under `prefix` when its remembered listing there is `digest` and still
    valid; None otherwise (the sync must compare the listing with the catalog)."""
    stmt = (select(listings.c.runs).join(catalog_state, catalog_state.c.id == 1)
            .where(listings.c.prefix == prefix, listings.c.digest == digest, listings.c.generation == catalog_state.c.generation))
    with engine.connect() as conn:
        return conn.execute(stmt).scalar_one_or_none()


def remember_listing(engine: Engine, prefix: str, digest: str, at_generation: int, runs: int) -> None:
    """Remember that the catalog held exactly the listing `digest` under `prefix` at generation `at_generation`."""
    with writing(engine, changes_runs=False) as conn:
        stmt = dialect_insert(conn)(listings).values(prefix=prefix, digest=digest, generation=at_generation, runs=runs)
        conn.execute(stmt.on_conflict_do_update(index_elements=["prefix"], set_={
            "digest": stmt.excluded.digest, "generation": stmt.excluded.generation, "runs": stmt.excluded.runs}))
