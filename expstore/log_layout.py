"""Where an experiment's logs live in a store: the two final files and the numbered segments.

::

    <name>_structured.jsonl                           the structured log (one JSON object per line)
    <name>.log                                        the human-readable log
    <name>.segments/<session>/<seq:08d>.jsonl         segments of a run on a store without append
    <name>.segments/<session>/<seq:08d>.log           (S3, fsspec, HDF5, Zarr), merged by finalize

A session is one logger's lifetime: ``<UTC start time, µs>-<pid>-<random>``, so sessions and
their segments sort in the order they were written.
"""

from __future__ import annotations

import os
import secrets
import time

STRUCTURED_SUFFIX = "_structured.jsonl"
TEXT_SUFFIX = ".log"
SEGMENTS_SUFFIX = ".segments"


def structured_key(name: str) -> str:
    """The key of the final structured log of experiment `name`."""
    return f"{name}{STRUCTURED_SUFFIX}"


def text_key(name: str) -> str:
    """The key of the final human-readable log of experiment `name`."""
    return f"{name}{TEXT_SUFFIX}"


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
    """The experiment names that these keys (a store's top-level listing) hold logs of."""
    names = set()
    for key in keys:
        head, _, _ = key.partition("/")
        if "/" not in key and key.endswith(STRUCTURED_SUFFIX):
            names.add(key[: -len(STRUCTURED_SUFFIX)])
        elif "/" in key and head.endswith(SEGMENTS_SUFFIX):
            names.add(head[: -len(SEGMENTS_SUFFIX)])
    return sorted(n for n in names if n)


def join_lines(parts: list[bytes]) -> bytes:
    """Concatenate pieces of line-oriented text, adding a newline where a piece ends mid-line."""
    out = []
    for part in parts:
        if part:
            out.append(part)
            if not part.endswith(b"\n"):
                out.append(b"\n")
    return b"".join(out)
