"""Who may ask and what they may name: the host and token gate, run ids checked like store keys, JSON errors."""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import cookie_parser

from ..errors import InvalidKey
from ..store.keys import validate_experiment_name, validate_key

__all__ = ["TOKEN_COOKIE", "AccessGate", "ApiError", "check_run_id", "check_token", "cookie_name", "int_param", "is_loopback"]

TOKEN_COOKIE = "expstore_token"


class ApiError(Exception):
    """A request the API refuses: its HTTP status and the message the JSON answer carries."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def check_run_id(run_id: str | None) -> tuple[str, str]:
    """(logs folder, experiment name) of a run id ``<folder>/<name>``; `ApiError` 400 for an id that is
    not a plain relative key (``..``, a leading ``/``, a backslash, control characters, empty)."""
    if not run_id:
        raise ApiError(400, "give the run as ?id=<run_id>")
    if "\\" in run_id:
        raise ApiError(400, f"invalid run id {run_id!r}: a backslash is not allowed")
    try:
        validate_key(run_id)
        folder, _, name = run_id.rpartition("/")
        validate_experiment_name(name)
    except InvalidKey as exc:
        raise ApiError(400, f"invalid run id {run_id!r}: {exc.message}") from None
    return folder, name


def int_param(params: Any, name: str, default: int, low: int, high: int | None = None) -> int:
    """The query parameter `name` as an int in [low, high]; `ApiError` 400 naming it otherwise."""
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {text!r}") from None
    if value < low or (high is not None and value > high):
        raise ApiError(400, f"{name} must be between {low} and {high}, got {value}" if high is not None
                       else f"{name} must be >= {low}, got {value}")
    return value


_TOKEN = re.compile(r"[A-Za-z0-9._~-]{8,}")


def check_token(token: str | None) -> str | None:
    """`token` if it is None or hard to guess and safe in a URL and a cookie as it is; `ValueError` otherwise."""
    if token is not None and not (isinstance(token, str) and _TOKEN.fullmatch(token)):
        raise ValueError("--token must be at least 8 characters of A-Z a-z 0-9 . _ ~ - "
                         "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return token


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only: ``localhost`` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """The host of a Host header, without its port (``[::1]:8765`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


class AccessGate:
    """ASGI middleware: without a token, only requests that name this machine in their Host header (a web
    page that rebinds its own DNS name to 127.0.0.1 gets 403); with a token, only requests that carry it
    (``Authorization: Bearer``, ``?token=`` or the cookie this sets once a request carried it), else 401.
    Only HTTP: any other connection (a websocket) is closed."""

    def __init__(self, app: Any, token: str | None):
        self.app, self.token = app, check_token(token)

    def _presented(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[str | None, bool]:
        """(the token a request carries, whether it came in the cookie)."""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0], False
        cookie = cookie_parser(headers.get("cookie", "")).get(cookie_name(scope))
        return (cookie, True) if cookie else (None, False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.token is None:
            if not is_loopback(_host_name(headers.get("host", ""))):
                await _refuse(send, 403, "this dashboard answers only requests for 127.0.0.1 or localhost "
                                         "(start it with --token to serve other host names)")
                return
            await self.app(scope, receive, send)
            return
        presented, from_cookie = self._presented(scope, headers)
        if presented is None or not hmac.compare_digest(presented.encode(), self.token.encode()):
            await _refuse(send, 401, "this dashboard needs its token: open the URL it printed (?token=...) "
                                     "or send 'Authorization: Bearer <token>'")
            return
        if from_cookie:
            await self.app(scope, receive, send)
            return
        cookie = f"{cookie_name(scope)}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def cookie_name(scope: dict[str, Any]) -> str:
    """The token cookie of the dashboard on this port (browsers share cookies across the ports of a host)."""
    server = scope.get("server") or ("", 0)
    return f"{TOKEN_COOKIE}_{server[1]}"


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
