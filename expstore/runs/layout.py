"""The keys of section runs in a store: names allowed in them, and the runs a listing holds.

::

    <section>_<TS>[_e<epochs>]_<model>.pkl | .parquet                one DataFrame per model type
    <section>_<TS>[_e<epochs>]_checkpoint_metadata.pkl | .json       metrics of the checkpoints
    <section>_<TS>_meta.json                                         a legacy run's metadata
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..errors import KeyNotFound
from ..store.base import Store

__all__ = [
    "CHECKPOINT_METADATA",
    "TIMESTAMP_FORMAT",
    "RunKeys",
    "check_name",
    "check_timestamp",
    "find_run",
    "free_timestamp",
    "runs_in",
]

TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
CHECKPOINT_METADATA = "checkpoint_metadata"
_TS_RE = re.compile(r"^\d{8}_\d{6}$")
_RUN_RE = re.compile(r"^(?P<section>.+?)_(?P<ts>\d{8}_\d{6})_(?P<rest>[^/]+)$")
_REST_RE = re.compile(r"^(?:e(?P<epochs>\d+)_)?(?P<name>.+)\.(?P<ext>pkl|parquet|json)$")


def check_name(value: object, what: str) -> str:
    """A section, model type, dataset or checkpoint name usable inside a key."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text or "/" in text or "\\" in text or text.startswith("."):
        raise ValueError(f"invalid {what} {value!r}: it must be a non-empty str without '/' or '\\', not starting with '.'")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"invalid {what} {value!r}: it contains a control character")
    return text


def check_timestamp(timestamp: object) -> str:
    """A run timestamp as the keys hold it (``20250101_120000``)."""
    if not isinstance(timestamp, str) or not _TS_RE.match(timestamp):
        raise ValueError(f"timestamp must look like 20250101_120000 ({TIMESTAMP_FORMAT}), got {timestamp!r}")
    return timestamp


@dataclass
class RunKeys:
    """The keys of one run in a store."""

    section: str
    timestamp: str
    epochs: int | None = None
    frames: dict[str, list[str]] = field(default_factory=dict)  # model type -> its DataFrame keys
    checkpoint_metadata: str | None = None
    legacy_meta: str | None = None

    @property
    def base(self) -> str:
        """The start every key of the run shares: ``<section>_<TS>[_e<epochs>]``."""
        suffix = "" if self.epochs is None else f"_e{self.epochs}"
        return f"{self.section}_{self.timestamp}{suffix}"


def _add_key(run: RunKeys, rest: str, key: str) -> None:
    """File `key` (whose part after the timestamp is `rest`) under what it holds for `run`."""
    m = _REST_RE.match(rest)
    if not m:
        return
    name, ext = m["name"], m["ext"]
    if m["epochs"] is not None and name != "meta":
        run.epochs = int(m["epochs"])
    if name == CHECKPOINT_METADATA and ext in ("pkl", "json"):
        run.checkpoint_metadata = key
    elif name == "meta" and ext == "json" and m["epochs"] is None:
        run.legacy_meta = key
    elif ext in ("pkl", "parquet"):
        run.frames.setdefault(name, []).append(key)


def runs_in(store: Store, prefix: str = "", keys: list[str] | None = None) -> dict[tuple[str, str], RunKeys]:
    """{(section, timestamp): its keys} of the runs under `prefix` (or in an existing listing `keys`)."""
    runs: dict[tuple[str, str], RunKeys] = {}
    for key in store.list(prefix) if keys is None else keys:
        m = _RUN_RE.match(key)
        if m:
            run = runs.setdefault((m["section"], m["ts"]), RunKeys(m["section"], m["ts"]))
            _add_key(run, m["rest"], key)
    return runs


def find_run(store: Store, section: str, timestamp: str) -> RunKeys:
    """The keys of one run; `KeyNotFound` when it has no DataFrame."""
    section, timestamp = check_name(section, "section"), check_timestamp(timestamp)
    run = runs_in(store, f"{section}_{timestamp}_").get((section, timestamp))
    if run is None or not run.frames:
        raise KeyNotFound(f"no run of section {section!r} at {timestamp!r}", url=store.url, key=f"{section}_{timestamp}_*")
    return run


def free_timestamp(store: Store, section: str) -> str:
    """Now as a run timestamp, or the next second that no run of `section` holds yet."""
    now = datetime.now()
    while True:
        ts = now.strftime(TIMESTAMP_FORMAT)
        if not store.list(f"{section}_{ts}_"):
            return ts
        now += timedelta(seconds=1)
