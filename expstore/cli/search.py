"""`expstore search ROOT [FILTER]`: the catalog's runs under a root, as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import fmt_number, short, storage_options, table

__all__ = ["cmd_search", "register"]


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `search`."""
    p = sub.add_parser("search", parents=parents, help="search the runs under a root with a filter (the run catalog)")
    p.add_argument("root", metavar="ROOT", help="the root URL whose runs are searched")
    p.add_argument("filter", nargs="?", default=None, metavar="FILTER",
                   help="e.g. \"metrics.loss < 0.1 and params.optimizer = 'adam'\" (MLflow syntax, plus OR and parentheses)")
    p.add_argument("--order-by", action="append", default=None, metavar="TERM",
                   help="e.g. 'metrics.loss' or 'start_time DESC' (repeat for more terms)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="at most N runs")
    p.add_argument("--catalog", default=None, metavar="URL",
                   help="sqlite:///path.db or postgresql://... (default EXPSTORE_CATALOG, else the per-user SQLite file)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON records")
    out.add_argument("--csv", action="store_true", help="print CSV")
    p.set_defaults(func=cmd_search)


def _cell(value: Any) -> str:
    """One table cell: numbers short, missing values empty, long text cut."""
    import pandas as pd

    if pd.isna(value):
        return ""
    if isinstance(value, float):
        return fmt_number(value)
    return short(str(value), 40)


def cmd_search(args: argparse.Namespace) -> int:
    """Sync the catalog from ROOT, search it, print the runs."""
    from ..catalog import search_runs

    frame = search_runs(args.root, args.filter, args.order_by, args.limit, catalog=args.catalog,
                        **storage_options(args, args.root))
    if args.json:
        sys.stdout.write(frame.to_json(orient="records", date_format="iso") + "\n")
    elif args.csv:
        frame.to_csv(sys.stdout, index=False)
    elif frame.empty:
        sys.stdout.write("no runs\n")
    else:
        rows = [[_cell(v) for v in row] for row in frame.astype(object).itertuples(index=False)]
        sys.stdout.write(table(rows, list(frame.columns)) + "\n")
    return 0
