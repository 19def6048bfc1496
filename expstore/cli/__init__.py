"""The `expstore` command: `demo` runs the example experiment; the others inspect and maintain any run URL.

Exit status: 0 ok, 1 a check failed (`verify`, `cp`'s verification), 2 bad usage or a URL that
cannot be used. Errors are one line naming the URL; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import NoReturn

from ..errors import PickleNotAllowed, StoreError
from .common import UsageError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (plus the --help hint), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common_options(suppress: bool) -> argparse.ArgumentParser:
    """Options every subcommand takes; on subcommands their default is SUPPRESS so they never undo the top level."""
    default = argparse.SUPPRESS if suppress else None
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if suppress else False,
                   help="show the traceback of an error")
    p.add_argument("--endpoint-url", default=default, metavar="URL",
                   help="S3 endpoint for s3:// and zarr+s3:// URLs (else AWS_ENDPOINT_URL or the AWS config)")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The full command line: global options and one subparser per command."""
    from . import browse, demo, maintain, report, search, ui

    parser = _Parser(prog="expstore", parents=[_common_options(False)],
                     description="Run the example experiment and inspect, verify, copy, compare and plot runs on any store URL.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    parents = [_common_options(True)]
    for module in (demo, browse, maintain, report, search, ui):
        module.register(sub, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        warnings.showwarning = _one_line_warning
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        sys.stderr.write(f"expstore {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except (UsageError, StoreError, ValueError, TypeError, OSError, ImportError, KeyError) as exc:
        return _fail(args, exc)
    except Exception as exc:  # noqa: BLE001 - one line unless --debug, as promised
        return _fail(args, exc, unexpected=True)


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    """Print a library warning (e.g. log events that never reached the store) as one stderr line."""
    sys.stderr.write(f"warning: {' '.join(str(message).split())}\n")


def _fail(args: argparse.Namespace, exc: BaseException, unexpected: bool = False) -> int:
    if args.debug:
        traceback.print_exc()
    message = str(exc) or type(exc).__name__
    if isinstance(exc, PickleNotAllowed):  # the CLI has no way to opt in: say what works instead
        message = message.replace(
            "pass allow_pickle=True if you trust it",
            "the command line never unpickles: copy it between bytes stores (local, S3), which copies its "
            "bytes unread, or load it in Python with allow_pickle=True if you trust it",
        )
    if unexpected or (isinstance(exc, (TypeError, KeyError)) and not isinstance(exc, StoreError)):
        message = f"{type(exc).__name__}: {message}"
    sys.stderr.write(f"expstore {args.command}: error: {' '.join(message.split())}\n")
    return 2
