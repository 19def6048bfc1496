"""The background writer of an experiment logger: buffers events and sends them to a store.

The training loop only appends a tuple to a deque (`LogSink.put`). One flusher thread per sink
wakes every `tick`, turns queued items into JSONL and `.log` text (`LineFormatter`) and writes:

* on a store with `supports_append` (local, memory): appends to ``<name>_structured.jsonl`` and
  ``<name>.log``;
* on any other store (S3, fsspec, HDF5, Zarr): numbered segment objects (`layout`), and on
  `close(finalize=True)` the merged final files, after which the merged segments are deleted.

A sink of one rank (``rank=r``) writes and merges only the keys of its stem ``<name>.rank<r>``.
Besides the logs it writes the run summary ``<stem>_run.json`` (`summaries`): after the start
event, then again every `summaries.HEARTBEAT_SECONDS` while the run goes on (a heartbeat, so that
a run whose process died shows as ``stale`` rather than ``running`` forever), and at
`close(finalize=True)`.

A buffer goes out when it holds `flush_bytes` or when its oldest event is `flush_interval` old, so
an event reaches storage within `flush_interval` of being logged (plus the write itself). A write
that fails is kept and retried with backoff; the unsent text is bounded by `max_buffer_bytes`
(oldest dropped first, counted as lost); the first failure warns once. `atexit` and SIGTERM flush
every open sink.
"""

from __future__ import annotations

import atexit
import collections
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from types import FrameType
from typing import Any

from ..errors import KeyNotFound
from ..store.base import Store
from . import summaries
from .layout import new_session, rank_stem, segment_key, segments_prefix, structured_key, summary_key, text_key
from .line_format import Item, LineFormatter
from .merge import merge_into
from .summaries import SummaryTracker

MiB = 2**20
MAX_QUEUED = 100_000  # items not yet formatted; a caller that gets this far ahead waits for the flusher
BATCH = 2048  # items formatted together: one orjson call per batch
EXIT_FLUSH_TIMEOUT = 10.0  # seconds atexit / SIGTERM wait for each sink
MAX_BACKOFF = 30.0

__all__ = ["MAX_QUEUED", "LogSink", "MiB", "check_flush_policy", "flush_all"]


def check_flush_policy(flush_interval: object, flush_bytes: object, max_buffer_bytes: object) -> None:
    """`TypeError` / `ValueError` naming the argument unless the interval is a number > 0 and the sizes ints."""
    if isinstance(flush_interval, bool) or not isinstance(flush_interval, (int, float)):
        raise TypeError(f"flush_interval must be a number of seconds > 0 (such as 2.0), got {type(flush_interval).__name__} {flush_interval!r:.80}")
    if not 0 < flush_interval < float("inf"):
        raise ValueError(f"flush_interval must be a number of seconds > 0 (such as 2.0), got {flush_interval!r}")
    for what, value, low, shown in (
        ("flush_bytes", flush_bytes, 1, "1"),
        ("max_buffer_bytes", max_buffer_bytes, flush_bytes, f"flush_bytes ({flush_bytes})"),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} must be an int (bytes), got {type(value).__name__} {value!r:.80}")
        if value < low:  # type: ignore[operator]
            raise ValueError(f"{what} must be an int >= {shown}, got {value!r}")


@dataclass
class _Chunk:
    """Text cut from a buffer, waiting to be written: to `key` (a segment, or the file appended to)."""

    kind: str  # "jsonl" or "log"
    key: str
    data: bytes
    lines: int


class _Buffer:
    """Formatted lines of one kind (UTF-8 bytes, whole lines) that are not cut into a chunk yet."""

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> None:
        self.pieces.append(data)
        self.size += len(data)

    def take(self) -> tuple[bytes, int]:
        data = b"".join(self.pieces)
        self.pieces, self.size = [], 0
        return data, data.count(b"\n")


class LogSink:
    """Queue + flusher thread + store writes for one experiment logger (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        name: str,
        logger_name: str,
        *,
        flush_interval: float = 2.0,
        flush_bytes: int = MiB,
        max_buffer_bytes: int = 64 * MiB,
        owns_store: bool = False,
        rank: int | None = None,
    ):
        check_flush_policy(flush_interval, flush_bytes, max_buffer_bytes)
        self.store, self.name, self.owns_store = store, name, owns_store
        self.stem = rank_stem(name, rank)  # the keys this sink owns: one rank's files and segments only
        self.flush_interval, self.flush_bytes, self.max_buffer_bytes = float(flush_interval), flush_bytes, max_buffer_bytes
        self.segmented = not store.supports_append
        self.session = new_session()
        self.queue: collections.deque[Item] = collections.deque()
        self.put = self.queue.append  # the only thing the caller's thread does
        self._formatter = LineFormatter(logger_name, rank)
        self._summary = SummaryTracker(name, rank)
        self._buffers = {"jsonl": _Buffer(), "log": _Buffer()}
        self._oldest: float | None = None  # log time of the oldest buffered item
        self._unsent: collections.deque[_Chunk] = collections.deque()
        self._unsent_bytes = 0
        self._seq = 0
        self._checked_ends: set[str] = set()
        self._tick = min(0.1, self.flush_interval / 10)
        self._wake = threading.Event()
        self._cond = threading.Condition()
        self._requested = self._done = 0  # flush generations
        self._closing = False
        self._released = False  # stopped by `release`: the thread itself unregisters and closes the store
        self._retry_at = 0.0
        self._failures = 0
        self._summary_at: float | None = None  # monotonic time of the last summary written
        self.stats = {"events_written": 0, "events_lost": 0, "lines_lost": 0, "write_errors": 0, "last_error": None}
        self._thread = threading.Thread(target=self._run, name=f"expstore-log-{self.stem}", daemon=True)
        self._thread.start()
        _register(self)

    # ---- caller side ----------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything queued so far (one attempt, even during a retry backoff); False on timeout."""
        with self._cond:
            if not self._thread.is_alive():
                return True
            self._requested += 1
            wanted = self._requested
            self._wake.set()
            return self._cond.wait_for(lambda: self._done >= wanted or not self._thread.is_alive(), timeout)

    def wait_for_room(self) -> None:
        """Block the caller until the flusher has formatted the queue down to half of `MAX_QUEUED`."""
        with self._cond:
            self._wake.set()
            self._cond.wait_for(lambda: len(self.queue) < MAX_QUEUED // 2 or not self._thread.is_alive(), 10.0)

    def release(self) -> None:
        """Stop the flusher after a last write, without waiting (its logger was garbage-collected unfinalized)."""
        with self._cond:
            if not self._closing:
                self._closing = "flush"  # type: ignore[assignment]
                self._released = True
            self._wake.set()

    def close(self, finalize: bool = True, timeout: float | None = 60.0) -> dict[str, Any]:
        """Stop the flusher after a last write (the merged final files when `finalize`); return the stats."""
        with self._cond:
            self._closing = "finalize" if finalize else "flush"  # type: ignore[assignment]
            self._wake.set()
        self._thread.join(timeout)
        _LIVE.discard(self)
        stats = dict(self.stats)
        if self._thread.is_alive():
            stats["pending"] = True
        elif self.owns_store:
            self.store.close()
        return stats

    # ---- flusher thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._tick)
            self._wake.clear()
            with self._cond:
                wanted, closing = self._requested, self._closing
            try:
                self._drain()
                forced = closing or wanted > self._done
                if forced or (self._oldest is not None and time.time() >= self._oldest + self.flush_interval - self._tick):
                    self._cut_all()
                if closing == "finalize" and self.segmented:
                    self._merge()
                else:
                    self._send(force=bool(forced))
                if closing == "finalize" or (not closing and self._summary_due()):
                    self._write_summary()
            except Exception as exc:  # noqa: BLE001 - the flusher must survive anything
                self._failed(exc)
            if closing:
                self._count_unsent_as_lost()
            with self._cond:
                self._done = max(self._done, wanted)
                if closing:
                    self._done = self._requested
                self._cond.notify_all()
            if closing:
                if self._released:
                    _LIVE.discard(self)
                    if self.owns_store:
                        try:
                            self.store.close()
                        except Exception:  # noqa: BLE001 - nobody is left to tell
                            pass
                return

    def _drain(self) -> None:
        """Format every queued item into the buffers, cutting a buffer when it reaches `flush_bytes`."""
        queue, popleft = self.queue, self.queue.popleft
        if not queue:
            return
        first = queue[0][0]
        while queue:
            batch = [popleft() for _ in range(min(len(queue), BATCH))]
            jsonl, log, seen = self._formatter.format_many(batch)
            self._add("jsonl", jsonl)
            self._add("log", log)
            self._summary.see_many(seen)
        if self._oldest is None and any(b.pieces for b in self._buffers.values()):
            self._oldest = first  # at or before the oldest line still buffered: flushes early, never late
        with self._cond:
            self._cond.notify_all()  # callers waiting for room in the queue

    def _add(self, kind: str, data: bytes) -> None:
        """Append formatted lines to buffer `kind`, cutting it after each line that brings it to `flush_bytes`."""
        buffer, start = self._buffers[kind], 0
        while start < len(data) and buffer.size + len(data) - start >= self.flush_bytes:  # once per `flush_bytes` of text
            end = data.index(b"\n", start + max(self.flush_bytes - buffer.size - 1, 0)) + 1
            buffer.add(data[start:end])
            start = end
            self._cut(kind)
        if start < len(data):
            buffer.add(data[start:] if start else data)

    def _cut(self, kind: str) -> None:
        """Move buffer `kind` into a chunk waiting to be written; enforce the memory bound."""
        buffer = self._buffers[kind]
        if not buffer.pieces:
            return
        data, lines = buffer.take()
        if self.segmented:
            self._seq += 1
            key = segment_key(self.stem, self.session, self._seq, kind)
        else:
            key = structured_key(self.stem) if kind == "jsonl" else text_key(self.stem)
        self._unsent.append(_Chunk(kind, key, data, lines))
        self._unsent_bytes += len(data)
        if not any(b.pieces for b in self._buffers.values()):
            self._oldest = None
        while self._unsent_bytes > self.max_buffer_bytes and len(self._unsent) > 1:
            self._drop(self._unsent.popleft())

    def _cut_all(self) -> None:
        self._cut("jsonl")
        self._cut("log")
        self._oldest = None

    def _drop(self, chunk: _Chunk) -> None:
        self._unsent_bytes -= len(chunk.data)
        self.stats["events_lost" if chunk.kind == "jsonl" else "lines_lost"] += chunk.lines

    def _send(self, force: bool) -> None:
        """Write the waiting chunks in order; stop at the first failure (kept for the retry)."""
        if not self._unsent or (not force and time.monotonic() < self._retry_at):
            return
        while self._unsent:
            chunk = self._unsent[0]
            # Appends take every waiting chunk of the file at once: one write and one fsync per file and flush.
            chunks = [chunk] if self.segmented else [c for c in self._unsent if c.key == chunk.key]
            try:
                if self.segmented:
                    self.store.write(chunk.key, chunk.data)
                else:
                    self.store.append(chunk.key, b"".join([self._line_start(chunk.key), *(c.data for c in chunks)]))
            except Exception as exc:  # noqa: BLE001 - any store failure is retried, never raised
                self._failed(exc)
                return
            for done in chunks:
                self._unsent.remove(done)
                self._sent(done)

    def _sent(self, chunk: _Chunk) -> None:
        self._unsent_bytes -= len(chunk.data)
        if chunk.kind == "jsonl":
            self.stats["events_written"] += chunk.lines
        if self._failures:
            self._failures = 0
            self._retry_at = 0.0

    def _line_start(self, key: str) -> bytes:
        """b"\\n" if the file we are about to append to ends in a torn line (a killed earlier run)."""
        if key in self._checked_ends:
            return b""
        try:
            size = self.store.size(key)
            torn = size > 0 and self.store.read_range(key, size - 1) != b"\n"
        except KeyNotFound:
            torn = False
        self._checked_ends.add(key)
        return b"\n" if torn else b""

    def _failed(self, exc: BaseException) -> None:
        """Count a failed write, warn on the first one, and back off before the next retry."""
        self.stats["write_errors"] += 1
        self.stats["last_error"] = f"{type(exc).__name__}: {exc}"
        if self.stats["write_errors"] == 1:
            warnings.warn(
                f"expstore logger {self.stem!r}: writing to {self.store.url} failed ({type(exc).__name__}: {exc}); "
                f"keeping up to {self.max_buffer_bytes / MiB:g} MiB of log text in memory and retrying",
                RuntimeWarning,
                stacklevel=2,
            )
        self._failures += 1
        self._retry_at = time.monotonic() + min(self.flush_interval * 2 ** (self._failures - 1), MAX_BACKOFF)

    def _merge(self) -> None:
        """Write the final files = old final + every segment of this stem + what is still unsent; delete merged segments."""
        listed = self.store.list(segments_prefix(self.stem))
        # Sessions sort by start time: one that started after this one is another writer, not a crashed run.
        later = sorted(s for s in {k.split("/")[-2] for k in listed} if s > self.session)
        raced = False
        for kind, final in (("jsonl", structured_key(self.stem)), ("log", text_key(self.stem))):
            segments = [k for k in listed if k.endswith(f".{kind}")]
            pending = [c for c in self._unsent if c.kind == kind]
            if not segments and not pending:
                continue
            raced |= merge_into(self.store, final, segments, [c.data for c in pending])
            for chunk in pending:
                self._unsent.remove(chunk)
                self._sent(chunk)
            for key in segments:
                try:
                    self.store.delete(key)
                except KeyNotFound:
                    pass
        if later or raced:
            warnings.warn(
                f"expstore logger {self.stem!r}: another logger of this experiment name "
                f"({'session ' + later[0] if later else 'finalizing at the same time'}) writes to {self.store.url} "
                f"beside this one (session {self.session}); both logs are kept in {structured_key(self.stem)}, "
                "but give each process its own rank= to keep them apart",
                RuntimeWarning,
                stacklevel=2,
            )

    def _summary_due(self) -> bool:
        """A start summary is waiting, or the last summary is a heartbeat old (and no write is backing off)."""
        now = time.monotonic()
        if now < self._retry_at:
            return False
        return self._summary.start_due or (
            self._summary_at is not None and now - self._summary_at >= summaries.HEARTBEAT_SECONDS
        )

    def _write_summary(self) -> None:
        """Write the run summary (`summaries`): at start, once a heartbeat, at finalize; one small PUT each."""
        self._summary.start_due = False
        try:
            self.store.write(summary_key(self.stem), self._summary.to_bytes())
            self._summary_at = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - retried like a log write
            self._summary.start_due = self._summary_at is None  # a heartbeat just waits for the next one
            self._failed(exc)

    def _count_unsent_as_lost(self) -> None:
        while self._unsent:
            self._drop(self._unsent.popleft())


# ---- process exit ---------------------------------------------------------------------------------

_LIVE: set[LogSink] = set()
_hooks_installed = False


def _register(sink: LogSink) -> None:
    """Track `sink` for the exit flush; install the atexit hook and SIGTERM handler once."""
    global _hooks_installed
    _LIVE.add(sink)
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(flush_all)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def flush_all() -> None:
    """Flush every open sink (at exit: segments and appends stay; nothing is merged)."""
    for sink in list(_LIVE):
        sink.flush(EXIT_FLUSH_TIMEOUT)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Flush, then exit with status 143 so that `finally` blocks and context managers run."""
    flush_all()
    raise SystemExit(128 + signum)
