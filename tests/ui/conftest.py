"""The dashboard as users start it: `expstore ui ROOT --port 0` in a child process, asked over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.workers import REPO_ROOT

START_TIMEOUT = 60.0


@dataclass
class Dashboard:
    """A running `expstore ui`: its base URL (no token), its token, the process."""

    url: str
    process: subprocess.Popen
    token: str | None = None
    output: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None  # collects `output` until the process closes its stdout

    def request(self, path: str, *, token: str | None | bool = True, headers: dict[str, str] | None = None,
                method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; `token=True` sends the dashboard's own as a bearer header."""
        sent = dict(headers or {})
        bearer = self.token if token is True else (token or None)
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        req = urllib.request.Request(self.url + path.lstrip("/"), headers=sent, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def api(self, path: str, **params: Any) -> tuple[int, Any]:
        """(status, decoded JSON) of an API call with query parameters (lists repeat the parameter)."""
        query = urllib.parse.urlencode(params, doseq=True)
        status, headers, body = self.request(f"api/{path}" + (f"?{query}" if query else ""))
        assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
        return status, json.loads(body)


def _read_url(process: subprocess.Popen, lines: list[str], found: threading.Event) -> None:
    for line in process.stdout:  # type: ignore[union-attr]
        lines.append(line)
        if "serving" in line:
            found.set()
    found.set()


@pytest.fixture
def start_dashboard(tmp_path: Any) -> Iterator[Callable[..., Dashboard]]:
    """Start `expstore ui ROOT --port 0 --catalog <a fresh SQLite file>` (plus extra args); stopped after the test."""
    started: list[Dashboard] = []

    def start(root: str, *args: str, token: str | None = None, env: dict[str, str] | None = None,
              catalog: str | None = None) -> Dashboard:
        catalog = catalog or f"sqlite:///{tmp_path / f'catalog{len(started)}.db'}"
        command = [sys.executable, "-m", "expstore", "ui", root, "--port", "0", "--catalog", catalog, "--refresh", "0.3", *args]
        if token:
            command += ["--token", token]
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, **(env or {})})
        lines: list[str] = []
        found = threading.Event()
        reader = threading.Thread(target=_read_url, args=(process, lines, found), daemon=True)
        reader.start()
        if not found.wait(START_TIMEOUT) or not any("serving" in line for line in lines):
            process.kill()
            raise AssertionError(f"expstore ui did not start: {''.join(lines)}")
        url = next(line for line in lines if "serving" in line).split(" at ")[1].strip().split("?")[0]
        started.append(Dashboard(url, process, token, lines, reader))
        return started[-1]

    yield start
    for dashboard in started:
        dashboard.process.terminate()
        try:
            dashboard.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            dashboard.process.kill()
