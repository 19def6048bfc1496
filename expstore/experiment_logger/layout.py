"""Where an experiment's logs live in a store: the two final files and the numbered segments.

::

    <name>_structured.jsonl                           the structured log (one JSON object per line)
    <name>.log                                        the human-readable log
    <name>.segments/<session>/<seq:08d>.jsonl         segments of a run on a store without append
    <name>.segments/<session>/<seq:08d>.log           (S3, fsspec, HDF5, Zarr), merged by finalize
    <name>_run.json                                   the run's small summary, for the run catalog
                                                      (written at start and at finalize)

A logger given ``rank=r`` writes the same files under the stem ``<name>.rank<r>`` instead of
``<name>`` (``<name>.rank3_structured.jsonl``, ``<name>.rank3.segments/...``): every rank owns its
keys, and each rank's files are a complete single-process log that older readers can open.

A session is one logger's lifetime: ``<UTC start time, µs>-<pid>-<random>``, so sessions and
their segments sort in the order they were written.
"""

from __future__ import annotations

import os
import secrets
import time

from ..format.run_summary import SEGMENTS_SUFFIX, STRUCTURED_SUFFIX, SUMMARY_SUFFIX, TEXT_SUFFIX, split_stem

__all__ = [
    "SEGMENTS_SUFFIX",
    "STRUCTURED_SUFFIX",
    "SUMMARY_SUFFIX",
    "TEXT_SUFFIX",
    "experiments_in",
    "join_lines",
    "new_session",
    "rank_stem",
    "segment_key",
    "segments_prefix",
    "split_stem",
    "stem_of",
    "structured_key",
    "summary_key",
    "text_key",
]


def rank_stem(name: str, rank: int | None) -> str:
    """The stem of the log keys of experiment `name` written by `rank` (`name` itself without a rank)."""
    return name if rank is None else f"{name}.rank{rank}"


def stem_of(key: str) -> str | None:
    """The stem whose log file or segment `key` is (None for any other key)."""
    head, sep, _ = key.partition("/")
    suffixes = (SEGMENTS_SUFFIX,) if sep else (STRUCTURED_SUFFIX, TEXT_SUFFIX)
    for suffix in suffixes:
        if head.endswith(suffix) and len(head) > len(suffix):
            return head[: -len(suffix)]
    return None


def structured_key(name: str) -> str:
    """The key of the final structured log of experiment `name`."""
    return f"{name}{STRUCTURED_SUFFIX}"


def text_key(name: str) -> str:
    """The key of the final human-readable log of experiment `name`."""
    return f"{name}{TEXT_SUFFIX}"


def summary_key(name: str) -> str:
    """The key of the run summary of experiment `name` (or of one rank's stem)."""
    return f"{name}{SUMMARY_SUFFIX}"


def segments_prefix(name: str) -> str:
    """The listing prefix of every segment of experiment `name`."""
    return f"{name}{SEGMENTS_SUFFIX}/"


def new_session() -> str:
    """A session id that sorts by start time and is unique across processes."""
    now = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}{int(now % 1 * 1e6):06d}Z-{os.getpid()}-{secrets.token_hex(3)}"


def segment_key(name: str, session: str, seq: int, kind: str) -> str:
    """The key of segment `seq` of `session`; `kind` is ``"jsonl"`` or ``"log"``."""
    return f"{segments_prefix(name)}{session}/{seq:08d}.{kind}"


def experiments_in(keys: list[str]) -> list[str]:
    """The experiment names that these keys (a store's top-level listing) hold structured logs of; ranks folded in."""
    names = set()
    for key in keys:
        stem = stem_of(key)
        if stem and ("/" in key or key.endswith(STRUCTURED_SUFFIX)):
            names.add(split_stem(stem)[0])
    return sorted(names)


def join_lines(parts: list[bytes]) -> bytes:
    """Concatenate pieces of line-oriented text, adding a newline where a piece ends mid-line."""
    out = []
    for part in parts:
        if part:
            out.append(part)
            if not part.endswith(b"\n"):
                out.append(b"\n")
    return b"".join(out)
