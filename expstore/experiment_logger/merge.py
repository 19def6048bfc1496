"""`finalize`'s merge on stores without append: each final file = its old value + segments + unsent text.

Two loggers may share an experiment name without `rank=` (two processes started from one
config). Their sessions differ, so their segments never collide, but both merge into the same
final files. Each final file is therefore committed with a conditional write where the store has
them (`if_absent`, or `if_match` on the version that was read), and the merge starts over when the
other writer committed first. A segment the other writer merged is either gone (deleted after its
commit) or already inside the final file; neither is added twice.
"""

from __future__ import annotations

from ..errors import KeyNotFound, PreconditionFailed, StoreError
from ..store.base import Store
from .layout import join_lines

MERGE_ATTEMPTS = 20

__all__ = ["MERGE_ATTEMPTS", "merge_into"]


def _current(store: Store, key: str, conditional: bool) -> tuple[str | None, bytes]:
    """(version token or None, value) of `key`; (None, b"") when it does not exist yet."""
    try:
        token = store.version(key) if conditional else None
        return token, store.read(key)  # a value newer than the token makes the conditional write fail: retried
    except KeyNotFound:
        return None, b""


def merge_into(store: Store, final: str, segments: list[str], pending: list[bytes]) -> bool:
    """Write `final` = its value + every segment of `segments` not in it yet + `pending`.

    Returns True when another writer committed `final` meanwhile (the merge was redone on top of
    its value). Raises `StoreError` if it kept losing the race.
    """
    conditional = store.supports_conditional_writes
    raced = False
    for _ in range(MERGE_ATTEMPTS):
        token, old = _current(store, final, conditional)
        parts = [old]
        for key in segments:
            try:
                data = store.read(key)
            except KeyNotFound:  # merged and deleted by the other writer
                raced = True
                continue
            if data and data not in old:  # in it: merged by the other writer, not deleted yet
                parts.append(data)
        merged = join_lines(parts + pending)
        try:
            if not conditional:
                store.write(final, merged)
            elif token is None:
                store.write(final, merged, if_absent=True)
            else:
                store.write(final, merged, if_match=token)
            return raced
        except PreconditionFailed:
            raced = True
    raise StoreError(f"another writer kept replacing it during {MERGE_ATTEMPTS} merges", url=store.url, key=final)
