"""`expstore logs`: the analysis of a run's structured log and its last events; `--follow` tails a running run."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..experiment_logger.layout import SEGMENTS_SUFFIX
from .common import UsageError, join_url, open_url, print_output, short
from .layout import Run, discover

__all__ = [
    "all_log_sources",
    "cmd_logs",
    "events_per_rank",
    "format_event",
    "load_events",
    "log_sources",
    "new_events",
    "register",
]

DEFAULT_LINES = 10


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add the `logs` subcommand."""
    p = sub.add_parser("logs", parents=parents,
                       help="summary of a run's log (events, status, duration, metrics) and its last events")
    p.add_argument("url", metavar="URL", help="a root of runs, one run, or a logs folder")
    p.add_argument("-n", "--lines", type=int, default=DEFAULT_LINES, help=f"last events to print (default {DEFAULT_LINES})")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new events until the run ends (Ctrl-C stops)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between polls with --follow (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_logs)


def log_sources(run: Run) -> list[tuple[str, str]]:
    """(logs folder URL, experiment name) of every structured log of a run."""
    from ..experiment_logger.layout import experiments_in

    by_folder: dict[str, list[str]] = {}
    for key in run.logs:
        head, sep, tail = key.partition(f"{SEGMENTS_SUFFIX}/")
        path = head.rpartition("/")[0] if sep else key.rpartition("/")[0]
        rel = key[len(path) + 1 :] if path else key
        by_folder.setdefault(path, []).append(rel)
    return [(join_url(run.url, folder), name) for folder, rels in sorted(by_folder.items()) for name in experiments_in(rels)]


def all_log_sources(args: argparse.Namespace, url: str) -> list[tuple[str, str]]:
    """Every (logs folder URL, experiment) under `url`; `UsageError` when there is none."""
    found = [src for run in discover(args, url) for src in log_sources(run)]
    if not found:
        raise UsageError(f"no structured log (<name>_structured.jsonl or its segments) found at {url!r}")
    return found


def load_events(args: argparse.Namespace, folder: str, experiment: str) -> list[dict[str, Any]]:
    """The events of one experiment's structured log, finalized or still in segments."""
    from ..experiment_logger import load_structured_logs

    with open_url(args, folder) as store:
        return load_structured_logs(store, experiment)  # a torn last line warns (one stderr line, see cli.main)


def cmd_logs(args: argparse.Namespace) -> int:
    """Print the analysis and last events of each log under the URL (or follow one)."""
    from ..experiment_logger import analyze_logs

    if args.lines < 0:
        raise UsageError(f"--lines must be >= 0, got {args.lines}")
    sources = all_log_sources(args, args.url)
    if args.follow:
        if len(sources) != 1:
            names = ", ".join(f"{join_url(f, n)}" for f, n in sources)
            raise UsageError(f"--follow needs one run; {args.url!r} holds the logs {names}")
        return _follow(args, *sources[0])
    docs = []
    for folder, experiment in sources:
        events = load_events(args, folder, experiment)
        docs.append({"url": folder, "experiment": experiment, "analysis": analyze_logs(events),
                     "last_events": events[-args.lines:] if args.lines else []})
    return print_output(args.json, {"url": args.url, "logs": docs}, docs, _print_analysis)


def _print_analysis(doc: dict[str, Any]) -> None:
    a = doc["analysis"]
    duration = "-" if a["duration_seconds"] is None else f"{a['duration_seconds']:.1f} s"
    status = a["final_status"] or "running or crashed (no end event)"
    print(f"log {doc['experiment']}  {doc['url']}")
    print(f"  status    {status}")
    print(f"  events    {a['total_events']} in {duration}, {a['sessions']} session(s), {a['errors']} error(s): "
          + ", ".join(f"{k} {v}" for k, v in a["event_counts"].items()))
    if a["final_metrics"]:
        print("  metrics   " + "  ".join(f"{k}={_num(v)}" for k, v in a["final_metrics"].items()))
    for rank, part in (a.get("per_rank") or {}).items():
        print(f"  rank {rank}  {part['final_status'] or 'running or crashed'}, {part['total_events']} events  "
              + "  ".join(f"{k}={_num(v)}" for k, v in part["final_metrics"].items()))
    if doc["last_events"]:
        print(f"  last {len(doc['last_events'])} events")
        for event in doc["last_events"]:
            print("    " + format_event(event))


def format_event(event: dict[str, Any]) -> str:
    """One line: time, rank (``r3``, when the event has one), event type, and the data as k=v pairs (metrics flattened)."""
    stamp = str(event.get("timestamp", ""))
    clock = stamp[11:23] if len(stamp) >= 23 else stamp
    data = event.get("data")
    if isinstance(data, dict):
        data = dict(data)
        data.pop("environment", None)
        nested = data.pop("metrics", None)
        if isinstance(data.get("config"), dict):
            data = data["config"]
        pairs = {**{k: v for k, v in data.items() if v is not None}, **(nested if isinstance(nested, dict) else {})}
        text = " ".join(f"{k}={_num(v)}" for k, v in pairs.items())
    else:
        text = short(data)
    rank = "" if event.get("rank") is None else f"r{event['rank']} "
    return f"{clock}  {rank}{str(event.get('event_type')):<16} {short(text, 110)}"


def _num(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else short(value, 80)


def events_per_rank(events: list[dict[str, Any]]) -> dict[Any, int]:
    """How many events each rank has in `events` (rank None: a single-process run)."""
    counts: dict[Any, int] = {}
    for event in events:
        counts[event.get("rank")] = counts.get(event.get("rank"), 0) + 1
    return counts


def new_events(events: list[dict[str, Any]], seen: dict[Any, int]) -> list[dict[str, Any]]:
    """The events beyond the first `seen[rank]` of each rank, in merged order: each rank's events
    only ever grow at the end, but merging ranks by time puts new ones anywhere in the list."""
    counts: dict[Any, int] = {}
    new = []
    for event in events:
        rank = event.get("rank")
        counts[rank] = counts.get(rank, 0) + 1
        if counts[rank] > seen.get(rank, 0):
            new.append(event)
    return new


def _follow(args: argparse.Namespace, folder: str, experiment: str) -> int:
    """Print the last events, then new ones as they reach the store, until an end event (or Ctrl-C)."""
    from ..experiment_logger import analyze_logs

    print(f"following {experiment} in {folder} (Ctrl-C stops)", flush=True)
    seen: dict[Any, int] | None = None  # events printed (or skipped) so far, per rank
    try:
        while True:
            events = load_events(args, folder, experiment)
            if seen is None:
                first = max(0, len(events) - args.lines)
                seen = events_per_rank(events[:first])
            for event in new_events(events, seen):
                print(format_event(event), flush=True)
            seen = events_per_rank(events)
            status = analyze_logs(events)["final_status"]
            if status is not None:
                print(f"run ended: {status}")
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
