"""`expstore compare` and `expstore plot`: runs side by side, as a table of config and final metrics, or as curves."""

from __future__ import annotations

import argparse
import io
from typing import Any

from ..checkpointing import CheckpointManager
from ..errors import StoreError
from .common import UsageError, fmt_number, open_url, print_json, table
from .layout import Run, discover
from .logs import load_events, log_sources

__all__ = ["cmd_compare", "cmd_plot", "collect_runs", "labels", "metric_series", "register"]


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `compare` and `plot`."""
    p = sub.add_parser("compare", parents=parents, help="config differences and final metrics of runs, side by side")
    p.add_argument("urls", nargs="+", metavar="URL", help="runs, or roots of runs (every run under each is compared)")
    p.add_argument("--all", action="store_true", help="show every config value, not only those that differ")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("plot", parents=parents, help="a metric over steps, one line per run (PNG, matplotlib)")
    p.add_argument("urls", nargs="+", metavar="URL", help="runs, or roots of runs")
    p.add_argument("--metric", default="loss", help="the metric to plot (default loss)")
    p.add_argument("-o", "--output", metavar="PNG", help="output file or URL (default <metric>.png)")
    p.add_argument("--y-scale", choices=("auto", "linear", "log"), default="auto",
                   help="y axis; auto is log when every value is > 0 and they span more than 100x (default auto)")
    p.set_defaults(func=cmd_plot)


def collect_runs(args: argparse.Namespace) -> list[Run]:
    """Every run under each URL, each once."""
    runs: dict[str, Run] = {}
    for url in args.urls:
        for run in discover(args, url):
            runs.setdefault(run.url, run)
    return list(runs.values())


def labels(runs: list[Run]) -> list[str]:
    """Run names when they are unique, else run URLs."""
    names = [r.name for r in runs]
    return names if len(set(names)) == len(names) else [r.url for r in runs]


# ---- compare -------------------------------------------------------------------------------------


def summarize(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    """Config, status, duration and final metrics from the run's log; the latest checkpoint from its index."""
    from ..experiment_logger import analyze_logs

    doc: dict[str, Any] = {"name": run.name, "url": run.url, "status": None, "duration_seconds": None,
                           "config": {}, "metrics": {}, "latest_checkpoint": None}
    for folder, experiment in log_sources(run)[:1]:
        events = load_events(args, folder, experiment)
        analysis = analyze_logs(events)
        configs = [e["data"]["config"] for e in events if e.get("event_type") == "config"
                   and isinstance(e.get("data"), dict) and isinstance(e["data"].get("config"), dict)]
        doc.update(status=analysis["final_status"] or "running/crashed", duration_seconds=analysis["duration_seconds"],
                   config=configs[-1] if configs else {}, metrics=dict(analysis["final_metrics"]))
    for ckpt in run.checkpoints[:1]:
        with open_url(args, ckpt.url) as store:
            try:
                listed = CheckpointManager(store, ckpt.experiment, keep_last_n=None).list_checkpoints()
            except StoreError:
                listed = []
        if listed:
            doc["latest_checkpoint"] = listed[-1]["iteration"]
            for k, v in listed[-1]["metadata"].items():
                doc["metrics"].setdefault(k, v)  # a run without logs still shows its last checkpoint's metrics
    return doc


def cmd_compare(args: argparse.Namespace) -> int:
    """Print a table: one column per run; rows for status, config values that differ, final metrics."""
    runs = collect_runs(args)
    docs = [summarize(args, r) for r in runs]
    config_keys = sorted({k for d in docs for k in d["config"]})
    differ = [k for k in config_keys if len({repr(d["config"].get(k)) for d in docs}) > 1]
    if args.json:
        print_json({"runs": docs, "differing_config": differ})
        return 0
    shown = config_keys if args.all else differ
    rows = [["status"] + [d["status"] or "-" for d in docs],
            ["latest checkpoint"] + ["-" if d["latest_checkpoint"] is None else str(d["latest_checkpoint"]) for d in docs],
            ["duration s"] + [f"{d['duration_seconds']:.1f}" if d["duration_seconds"] is not None else "-" for d in docs]]
    rows += [[f"config {k}"] + [fmt_number(d["config"].get(k, "-")) for d in docs] for k in shown]
    metric_keys = sorted({k for d in docs for k in d["metrics"]})
    rows += [[k] + [fmt_number(d["metrics"].get(k, "-")) for d in docs] for k in metric_keys]
    print(table(rows, [""] + labels(runs)))
    same = len(config_keys) - len(differ)
    if not args.all and same:
        print(f"({same} config value(s) equal in every run; --all shows them)")
    return 0


# ---- plot ----------------------------------------------------------------------------------------


def metric_series(args: argparse.Namespace, run: Run, metric: str) -> tuple[list[int], list[float], set[str]]:
    """(steps, values) of `metric` in the run's metrics events, and every metric name seen.

    A step logged twice (a run resumed from a checkpoint redoes some steps) keeps its later value.
    """
    points: dict[int, float] = {}
    seen: set[str] = set()
    for folder, experiment in log_sources(run):
        for event in load_events(args, folder, experiment):
            data = event.get("data")
            if event.get("event_type") != "metrics" or not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
                continue
            seen.update(data["metrics"])
            value, step = data["metrics"].get(metric), data.get("step")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(step, int):
                points[step] = float(value)
    steps = sorted(points)
    return steps, [points[s] for s in steps], seen


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw the metric of every run into one PNG."""
    runs = collect_runs(args)
    series = [metric_series(args, r, args.metric) for r in runs]
    if not any(steps for steps, _, _ in series):
        names = sorted(set().union(*(seen for _, _, seen in series)))
        raise UsageError(f"no run under {' '.join(args.urls)} logged the metric {args.metric!r}"
                         + (f"; logged metrics: {', '.join(names)}" if names else " (no metrics events found)"))
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
    except ImportError as exc:
        raise UsageError('expstore plot needs matplotlib: pip install "expstore[cli]"') from exc
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for label, (steps, values, _) in zip(labels(runs), series, strict=True):
        if steps:
            ax.plot(steps, values, label=label, linewidth=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel(args.metric)
    values = [v for _, vs, _ in series for v in vs]
    if args.y_scale == "log" or (args.y_scale == "auto" and min(values) > 0 and max(values) > 100 * min(values)):
        ax.set_yscale("log")
    ax.set_title(f"{args.metric} over steps")
    ax.grid(True, alpha=0.3)
    ax.legend()
    out = args.output or f"{args.metric}.png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    _write_file(args, out, buffer.getvalue())
    print(f"wrote {out}: {args.metric} of {sum(1 for s, _, _ in series if s)} run(s)")
    return 0


def _write_file(args: argparse.Namespace, out: str, data: bytes) -> None:
    """Write `data` to a local path or to a file URL on any store."""
    from ..data_export import split_location

    base, name = split_location(out)
    with open_url(args, base) as store:
        store.write(name, data)
