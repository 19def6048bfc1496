"""Whether an S3 server honours conditional writes: probed once per endpoint and bucket per process.

Some S3-compatible servers (s3rver, older MinIO) accept `If-None-Match: *` and `If-Match` and
ignore them, so a compare-and-swap there would silently overwrite. The probe writes one fresh
object, then writes it again with `If-None-Match: *` and with a stale `If-Match`; only a server
that refuses both honours conditions. The object is deleted afterwards.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable

from ..errors import PreconditionFailed, StoreError

__all__ = ["PROBE_PREFIX", "honours_conditions", "ignored_conditions_reason", "probe_key"]

PROBE_PREFIX = ".expstore-probe-"
_STALE_ETAG = '"' + "0" * 32 + '"'  # an MD5 ETag no value of the probe's can have

_known: dict[tuple[str, str], bool] = {}
_lock = threading.Lock()


def _reset_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a thread that held it at fork time does not exist in the child


os.register_at_fork(after_in_child=_reset_lock_in_child)


def probe_key() -> str:
    """A fresh key for one probe (its segment is reserved, so no user key can collide with it)."""
    return PROBE_PREFIX + uuid.uuid4().hex


def ignored_conditions_reason(endpoint: str) -> str:
    """Why a conditional write is refused on a server that ignores conditions (the `StoreError` message)."""
    return (
        f"the S3 server at {endpoint} ignores conditional writes (a probe write with If-None-Match: * "
        "overwrote an existing object), so this conditional write is refused rather than turned into a "
        "silent overwrite"
    )


def honours_conditions(
    endpoint: str, bucket: str, put: Callable[[bytes, dict[str, str]], object], delete: Callable[[], None]
) -> bool:
    """Whether the server at `endpoint` honours conditions for `bucket`, probing it the first time.

    `put(data, conditions)` writes the probe object (raising `PreconditionFailed` when the server
    refuses a condition) and `delete()` removes it. Concurrent callers for one bucket share one probe.
    Errors other than a refused condition propagate and nothing is cached.
    """
    where = (endpoint, bucket)
    with _lock:
        if where not in _known:
            _known[where] = _probe(put, delete)
        return _known[where]


def _probe(put: Callable[[bytes, dict[str, str]], object], delete: Callable[[], None]) -> bool:
    put(b"probe-1", {})
    try:
        for data, conditions in ((b"probe-2", {"IfNoneMatch": "*"}), (b"probe-3", {"IfMatch": _STALE_ETAG})):
            try:
                put(data, conditions)
            except PreconditionFailed:
                continue
            return False  # the write went through although its condition did not hold
        return True
    finally:
        with contextlib.suppress(StoreError):
            delete()
