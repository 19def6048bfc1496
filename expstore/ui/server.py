"""Serving the dashboard: the loopback-unless-token rule, the socket, the printed URL, a clean stop."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

import uvicorn

from .access import check_token, is_loopback
from .app import create_app

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "check_host", "serve"]

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765


def check_host(host: str, token: str | None) -> None:
    """`ValueError` for a host other than loopback without a token, and for a token `check_token` refuses."""
    check_token(token)
    if token is None and not is_loopback(host):
        raise ValueError(f"--host {host} would serve the dashboard beyond this machine: give --token too "
                         "(or use 127.0.0.1 and an SSH port forward, see docs/ui.md)")


def _bound_socket(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port); port 0 takes a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(root: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
          catalog: str | None = None, refresh_seconds: float = 2.0, out: TextIO | None = None, **storage_options: Any) -> None:
    """Serve the dashboard of `root` until interrupted (Ctrl-C or SIGTERM), printing its URL once it listens."""
    check_host(host, token)
    app = create_app(root, catalog=catalog, token=token, refresh_seconds=refresh_seconds, **storage_options)
    sock = _bound_socket(host, port)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{sock.getsockname()[1]}/" + (f"?token={token}" if token else "")

    class _Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit:  # the app started (the catalog synced once): now the URL answers
                print(f"expstore ui: serving {root} at {url}", file=out or sys.stdout, flush=True)

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3)
    with _stopped_by_signals():
        _Server(config).run(sockets=[sock])
    print("expstore ui: stopped", file=out or sys.stdout, flush=True)


class _Stop(Exception):
    """SIGTERM, raised where the server re-raises the signal it shut down for."""


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """A block that Ctrl-C or SIGTERM ends quietly: uvicorn shuts down on either, then raises it again."""
    def stop(signum: int, frame: Any) -> None:
        raise _Stop

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        yield
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
