"""What the benchmarks in this folder share: the timing of a pair, the result row, the report and the run.

store_bench.py and tree_bench.py both time an expstore operation against the raw call it wraps and
report the same table, so the pieces that must stay alike live here once:

- `Row`, one operation timed against its baseline, with its throughputs, ratios and verdict;
- `time_pair`, the interleaved timing (one untimed warm-up round, then alternating order);
- `raw_write`, the open + write + flush + fsync baseline of a bytes write;
- `scratch_folder`, the folder on the measured disk that is removed afterwards;
- `bench_parser` and `parse_bench_args`, the command-line options both scripts take;
- `print_report` (with `table`, whose columns `render_columns` lays out) and `machine`, the printed report;
- `run`, which turns Ctrl-C and SIGTERM into a clean exit 130 after the cleanup has run.

The scripts run as `python benchmarks/<script>.py`, so their folder is on sys.path and they
import this module as `benchlib`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

MiB = 2**20


@dataclass
class Row:
    """One expstore operation timed against its baseline; times in seconds, one per repeat.

    A row without a target (a derived row, which divides the times of two measured rows) gets no verdict.
    """

    operation: str
    baseline: str
    target: float | None
    size_bytes: int
    expstore_s: list[float]
    baseline_s: list[float]

    def mib_s(self, seconds: float) -> float:
        return self.size_bytes / MiB / seconds

    @property
    def ratio(self) -> float:
        return statistics.median(self.expstore_s) / statistics.median(self.baseline_s)

    @property
    def best_ratio(self) -> float:
        return min(self.expstore_s) / min(self.baseline_s)

    @property
    def ok(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target

    def as_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "baseline": self.baseline,
            "size_bytes": self.size_bytes,
            "expstore_s": self.expstore_s,
            "baseline_s": self.baseline_s,
            "expstore_mib_s_median": self.mib_s(statistics.median(self.expstore_s)),
            "expstore_mib_s_best": self.mib_s(min(self.expstore_s)),
            "baseline_mib_s_median": self.mib_s(statistics.median(self.baseline_s)),
            "baseline_mib_s_best": self.mib_s(min(self.baseline_s)),
            "ratio_median": self.ratio,
            "ratio_best": self.best_ratio,
            "target": self.target,
            "ok": self.ok,
        }


# ---- timing -------------------------------------------------------------------------------


def time_pair(
    expstore_op: Callable[[], object],
    baseline_op: Callable[[], object],
    repeat: int,
    before_each: Callable[[], None] | None = None,
) -> tuple[list[float], list[float]]:
    """Run both operations once untimed, then `repeat` timed rounds, swapping which goes first.

    A result (read bytes or arrays) is freed after the clock stops, so deallocation is not timed.
    """
    ops = (expstore_op, baseline_op)
    for op in ops:
        op()
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(repeat):
        for side in (0, 1) if round_ % 2 == 0 else (1, 0):
            if before_each is not None:
                before_each()
            start = time.perf_counter()
            result = ops[side]()
            times[side].append(time.perf_counter() - start)
            del result
    return times


# ---- local files --------------------------------------------------------------------------


def raw_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def scratch_folder(parent: Path | None, prefix: str) -> Iterator[Path]:
    """A fresh folder, its name starting with `prefix`, inside `parent` (default ./.bench-tmp), removed
    at the end with what it holds; `parent` too if this created it and it is left empty."""
    parent = Path(".bench-tmp").absolute() if parent is None else parent
    created_parent = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if created_parent:
            with contextlib.suppress(OSError):
                parent.rmdir()


# ---- command line -------------------------------------------------------------------------


def bench_parser(description: str, size_help: str) -> argparse.ArgumentParser:
    """A parser with the options every benchmark takes first: --size-mib, --repeat and --dir."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size-mib", type=int, default=256, help=size_help)
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per operation (default 5)")
    parser.add_argument(
        "--dir",
        type=Path,
        help="folder on the disk to measure (default ./.bench-tmp); the files made in it are removed after",
    )
    return parser


def parse_bench_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Add --json after the script's own options, parse `argv` and refuse a size or repeat below 1."""
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows and run details here")
    args = parser.parse_args(argv)
    if args.size_mib < 1 or args.repeat < 1:
        parser.error("--size-mib and --repeat must be >= 1")
    return args


# ---- report -------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    header = [
        "operation",
        "expstore MiB/s",
        "baseline",
        "baseline MiB/s",
        "ratio (expstore t / baseline t)",
        "target",
        "ok?",
    ]
    lines = [
        [
            row.operation,
            f"{row.mib_s(statistics.median(row.expstore_s)):.0f} ({row.mib_s(min(row.expstore_s)):.0f})",
            row.baseline,
            f"{row.mib_s(statistics.median(row.baseline_s)):.0f} ({row.mib_s(min(row.baseline_s)):.0f})",
            f"{row.ratio:.2f} ({row.best_ratio:.2f})",
            "-" if row.target is None else f"<= {row.target:.1f}",
            "-" if row.ok is None else "ok" if row.ok else "NO",
        ]
        for row in rows
    ]
    return render_columns(header, lines)


def render_columns(header: list[str], lines: list[list[str]]) -> str:
    """The cells as left-aligned columns joined by " | ", a rule of dashes under the header."""
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    render = [" | ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() for cells in [header, *lines]]
    render.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(render)


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(packages: Iterable[str], extras: Iterable[str] = ()) -> str:
    """Platform, CPUs and Python, then the installed version of each of `packages`, then `extras`."""
    versions = ", ".join([*(f"{name} {package_version(name)}" for name in packages), *extras])
    return f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {versions}"


def print_report(
    rows: list[Row],
    notes: list[str],
    machine_line: str,
    command: str,
    json_path: Path | None = None,
    row_json: Callable[[Any], dict[str, Any]] = lambda row: row.as_json(),
    render: Callable[[list[Any]], str] = table,
    **extra: Any,
) -> None:
    """Print the table (`render`), notes, machine and command; also write them (and `extra`) to `json_path`."""
    print(render(rows))
    print()
    print("\n".join(f"note: {note}" for note in notes))
    print(f"machine: {machine_line}")
    print(f"command: {command}")
    if json_path is not None:
        report = {"command": command, "machine": machine_line, **extra, "notes": notes, "rows": [row_json(r) for r in rows]}
        json_path.write_text(json.dumps(report, indent=2) + "\n")


# ---- running ------------------------------------------------------------------------------


def interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so the `finally` blocks close stores, stop servers and remove files


def run(main: Callable[[], int], interrupted: str) -> NoReturn:
    """Exit with `main()`'s status; on Ctrl-C or SIGTERM, once its cleanup has run, print `interrupted`
    to stderr and exit 130."""
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)
