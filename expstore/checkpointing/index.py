"""The index of one experiment's checkpoints: its format, how it is read, and how a save commits to it.

The index (``<exp>_index.json``) is the truth: readers only see the checkpoints it names. A commit
replaces it by compare-and-swap where the store supports conditional writes (retried on
conflict); elsewhere only a writer that promised ``single_writer=True`` may commit.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from ..errors import CorruptData, KeyNotFound, PreconditionFailed, StoreError
from ..store.base import Store
from .names import CKPT_RE, index_key

__all__ = ["CAS_ATTEMPTS", "INDEX_FORMAT", "INDEX_VERSION", "Index", "Retain", "encode_index", "parse_index"]

INDEX_FORMAT = "expstore.checkpoint-index"
INDEX_VERSION = 1
CAS_ATTEMPTS = 50
INDEX_READ_ATTEMPTS = 5  # reads of an index that does not parse, with backoff 0.05 s doubling (0.75 s in all)

Entry = dict[str, Any]
Retain = Callable[[list[Entry]], tuple[list[Entry], list[Entry]]]  # entries -> (kept, dropped)


def parse_index(raw: bytes, store: Store, key: str, experiment: str) -> list[Entry]:
    """The entries of an index object, sorted by iteration; `CorruptData` naming it when malformed."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT:
            raise ValueError(f"format is not {INDEX_FORMAT!r}")
        if doc.get("version") != INDEX_VERSION:
            raise ValueError(f"unknown index version {doc.get('version')!r}")
        entries = doc["checkpoints"]
        if not isinstance(entries, list):
            raise ValueError("'checkpoints' is not a list")
        for e in entries:
            if not isinstance(e, dict) or isinstance(e.get("iteration"), bool) or not isinstance(e.get("iteration"), int):
                raise ValueError(f"bad entry {e!r}")
            if not isinstance(e.get("key"), str) or not CKPT_RE.match(e["key"]):
                raise ValueError(f"bad key in entry {e!r}")
            e.setdefault("tags", [])
            e.setdefault("metadata", {})
            e.setdefault("timestamp", None)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"corrupt checkpoint index of experiment {experiment!r}: {exc}", url=store.url, key=key) from None
    return sorted(entries, key=lambda e: e["iteration"])


def encode_index(experiment: str, entries: list[Entry]) -> bytes:
    """The bytes of the index of `experiment` naming `entries`."""
    doc = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "experiment": experiment,
        "checkpoints": sorted(entries, key=lambda e: e["iteration"]),
    }
    return json.dumps(doc, indent=1, allow_nan=False).encode()


class Index:
    """The index of `experiment` in `store`: read its entries, commit an entry (compare-and-swap)."""

    def __init__(self, store: Store, experiment: str, *, single_writer: bool = False):
        self.store, self.experiment, self.single_writer = store, experiment, single_writer
        self.key = index_key(experiment)
        self._load_order_memo: tuple[str, list[tuple[int, str]]] | None = None

    def read(self, with_version: bool = True) -> tuple[list[Entry], str | None]:
        """(entries, version token or None when there is no index or it was not asked for).
        The version, which a compare-and-swap needs, is taken before the read."""
        version = None
        if with_version and self.store.supports_conditional_writes:
            try:
                version = self.store.version(self.key)
            except KeyNotFound:
                return [], None
        entries = self.fetch()
        return ([], None) if entries is None else (entries, version)

    def entries(self) -> list[Entry]:
        """The entries the index names, oldest first (none when there is no index)."""
        return self.read(with_version=False)[0]

    def fetch(self) -> list[Entry] | None:
        """The parsed index (None when there is none). One that does not parse is read again with
        backoff before `CorruptData` is raised: where a PUT is not atomic (s3rver), a reader can
        catch an index half replaced by another writer."""
        attempt = 0
        while True:
            try:
                raw = self.store.read(self.key)
            except KeyNotFound:
                return None
            try:
                return parse_index(raw, self.store, self.key, self.experiment)
            except CorruptData:
                attempt += 1
                if attempt == INDEX_READ_ATTEMPTS:
                    raise
                time.sleep(0.05 * 2 ** (attempt - 1))

    def load_order(self) -> list[tuple[int, str]]:
        """(iteration, key) of the indexed checkpoints, newest first. On a local disk the list is
        reused while the index keeps its version token (inode, ns mtime, size): one stat instead
        of reading and parsing the index before every load."""
        if self.store.local_path(self.key) is None:
            return [(e["iteration"], e["key"]) for e in reversed(self.entries())]
        try:
            version = self.store.version(self.key)
        except KeyNotFound:
            return []
        if self._load_order_memo is None or self._load_order_memo[0] != version:
            entries = self.fetch()
            if entries is None:
                return []
            self._load_order_memo = (version, [(e["iteration"], e["key"]) for e in reversed(entries)])
        return self._load_order_memo[1]

    def commit(self, add: Entry | None = None, retain: Retain | None = None) -> list[Entry]:
        """Add/replace entry `add` (by iteration) and keep what `retain` keeps (default: every
        entry), by compare-and-swap retried on conflict; return the entries `retain` dropped."""
        self.check_writable()
        for attempt in range(CAS_ATTEMPTS):
            entries, version = self.read()
            if add is not None:
                entries = [e for e in entries if e["iteration"] != add["iteration"]] + [add]
            kept, dropped = retain(entries) if retain is not None else (entries, [])
            data = encode_index(self.experiment, kept)
            if not self.store.supports_conditional_writes:  # single_writer=True: nobody else commits
                self.store.write(self.key, data)
                return dropped
            try:
                if version is None:
                    self.store.write(self.key, data, if_absent=True)
                else:
                    self.store.write(self.key, data, if_match=version)
                return dropped
            except PreconditionFailed:
                time.sleep(random.uniform(0, min(0.5, 0.005 * 2 ** min(attempt, 7))))
        raise PreconditionFailed(
            f"could not update the checkpoint index after {CAS_ATTEMPTS} attempts (too many concurrent writers)",
            url=self.store.url,
            key=self.key,
        )

    def check_writable(self) -> None:
        """Refuse to commit where a concurrent save could silently undo this one: a store without
        conditional writes, unless the caller promised `single_writer=True`."""
        if self.single_writer or self.store.supports_conditional_writes:
            return
        raise StoreError(
            f"{self.store.no_conditional_writes_reason}; without them two processes saving experiment "
            f"{self.experiment!r} at once can silently drop each other's index entries. Pass "
            "single_writer=True to CheckpointManager if only this process saves this experiment (the ranks "
            "of one sharded save count as one writer), or use a store that honours conditional writes",
            url=self.store.url,
            key=self.key,
        )
