"""`expstore ui`: serve the read-only dashboard of a root URL."""

from __future__ import annotations

import argparse
from typing import Any

from .common import storage_options

__all__ = ["register"]


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add the `ui` subcommand."""
    p = sub.add_parser("ui", parents=parents, help="serve a live web dashboard of the runs under a root URL",
                       description="Serve a read-only web dashboard (runs table, run charts, compare) of ROOT until Ctrl-C.")
    p.add_argument("root", metavar="ROOT", help="root URL or path (local, s3://, .h5, .zarr)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 takes a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other needs --token)")
    p.add_argument("--token", default=None, help="secret every request must carry (needed beyond loopback)")
    p.add_argument("--catalog", default=None, metavar="URL",
                   help="catalog database URL (default: EXPSTORE_CATALOG or the embedded SQLite)")
    p.add_argument("--refresh", type=float, default=2.0, metavar="SECONDS", help="seconds between catalog syncs (default 2)")
    p.set_defaults(func=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    from ..ui import serve

    serve(args.root, host=args.host, port=args.port, token=args.token, catalog=args.catalog,
          refresh_seconds=args.refresh, **storage_options(args, args.root))
    return 0
