"""What every command shares: storage options from the flags, URL joins, errors, sizes, ages, tables, JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ..store import locate
from ..store.base import Store
from ..store.registry import open_store, split_url

__all__ = [
    "UsageError",
    "age_seconds",
    "fmt_number",
    "human_age",
    "human_size",
    "join_url",
    "open_url",
    "print_json",
    "print_output",
    "progress_bar",
    "short",
    "storage_options",
    "table",
]


class UsageError(Exception):
    """A bad command line or a URL that holds nothing the command can use: exit status 2."""


def storage_options(args: argparse.Namespace, url: str) -> dict[str, Any]:
    """The storage options the flags give for `url` (`--endpoint-url` applies to S3 URLs only)."""
    endpoint = getattr(args, "endpoint_url", None)
    if endpoint and split_url(url)[0].rpartition("+")[2] == "s3":
        return {"endpoint_url": endpoint}
    return {}


def open_url(args: argparse.Namespace, url: str) -> Store:
    """Open the store at `url` with the options the flags give for it."""
    return open_store(url, **storage_options(args, url))


def join_url(url: str, *parts: str) -> str:
    """`url` + "/" + the non-empty `parts` (`./runs`, `exp001`, `logs` -> `./runs/exp001/logs`)."""
    tail = "/".join(p.strip("/") for p in parts if p)
    return locate.join_url(url, tail) if tail else url


def human_size(n: int | None) -> str:
    """1536 -> '1.5 KiB'; None -> '-'."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def age_seconds(timestamp: str | None) -> float | None:
    """Seconds since an ISO-8601 timestamp (None when missing or unparsable)."""
    if not timestamp:
        return None
    try:
        then = datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - then).total_seconds())


def human_age(seconds: float | None) -> str:
    """42 -> '42s', 3700 -> '1h'; None -> '-'."""
    if seconds is None:
        return "-"
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{int(seconds // length)}{unit}"
    return f"{int(seconds)}s"


def table(rows: list[list[Any]], header: list[str] | None = None, indent: str = "") -> str:
    """Left-aligned text columns, two spaces apart."""
    cells = [[str(c) for c in row] for row in ([header] if header else []) + rows]
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(max(map(len, cells)))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in cells]
    return "\n".join(indent + line for line in lines)


def short(value: Any, width: int = 60) -> str:
    """A one-line rendering of a value, cut to `width` characters."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def fmt_number(value: Any) -> str:
    """Floats with 6 significant digits, everything else as `short` shows it."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return short(value, 40)


def print_output(as_json: bool, doc: Any, items: Iterable[Any], show: Callable[[Any], None]) -> int:
    """Print `doc` as JSON when `as_json` (--json), else `show` each item with an empty line between
    two (the human output of `ls`, `show`, `logs`); return the exit status 0."""
    if as_json:
        print_json(doc)
        return 0
    for i, item in enumerate(items):
        if i:
            print()
        show(item)
    return 0


def print_json(doc: Any) -> None:
    """Write `doc` as indented JSON to stdout (numpy scalars and others as their str)."""
    json.dump(doc, sys.stdout, indent=2, default=_jsonable)
    sys.stdout.write("\n")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


class _NoBar:
    """Stands in for a tqdm bar when there is no terminal or no tqdm."""

    def update(self, n: int = 1) -> None:
        """Do nothing."""

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""


def progress_bar(total: int, *, initial: int = 0, desc: str = "", unit: str = "it", enabled: bool = True) -> Any:
    """A tqdm bar on stderr when it is a terminal and tqdm is installed, else a no-op stand-in."""
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    scale = unit == "B"
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=scale, unit_divisor=1024 if scale else 1000,
                file=sys.stderr, dynamic_ncols=True, leave=True)
