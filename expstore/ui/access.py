"""Who may ask and what they may name: the token gate, run ids checked like store keys, JSON errors."""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs

from ..errors import InvalidKey
from ..store.keys import validate_experiment_name, validate_key

__all__ = ["TOKEN_COOKIE", "ApiError", "TokenGate", "check_run_id", "int_param"]

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


class TokenGate:
    """ASGI middleware: with a token set, every request must carry it (``Authorization: Bearer``, ``?token=``
    or the cookie this sets once a request carried it); others get 401 JSON."""

    def __init__(self, app: Any, token: str | None):
        self.app, self.token = app, token

    def _presented(self, scope: dict[str, Any]) -> tuple[str | None, bool]:
        """(the token a request carries, whether it came in the cookie)."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("token"):
            return query["token"][0], False
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is a request without the cookie
            return None, False
        morsel = cookie.get(TOKEN_COOKIE)
        return (morsel.value, True) if morsel else (None, False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        presented, from_cookie = self._presented(scope)
        if presented is None or not hmac.compare_digest(presented.encode(), self.token.encode()):
            body = json.dumps({"error": "this dashboard needs its token: open the URL it printed (?token=...) "
                                        "or send 'Authorization: Bearer <token>'"}).encode()
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        if from_cookie:
            await self.app(scope, receive, send)
            return
        cookie = f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/".encode()

        async def send_with_cookie(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
