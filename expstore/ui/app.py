"""The dashboard's ASGI app: the static page, and a read-only JSON API over one root and its catalog."""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import AsyncIterator
from importlib.metadata import version
from importlib.resources import files
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..catalog import Catalog, open_catalog
from ..errors import StoreError
from ..store.base import Store
from ..store.locate import opened_store
from .access import AccessGate, ApiError, check_run_id, check_token, int_param
from .run_detail import checkpoint_folder, list_checkpoints, read_run, verify_checkpoint
from .run_logs import MIN_CHECK_SECONDS, RunLog
from .runs_view import RunsView, run_row

__all__ = ["STATIC", "create_app"]

STATIC = files("expstore.ui") / "static"
MAX_PAGE = 1000
MAX_OFFSET = 2 ** 62  # within a 64-bit SQL integer
MAX_CACHED_EVENTS = 2_000_000  # events kept parsed over all runs; the least recently asked runs are dropped first
MAX_RUN_LOGS = 32  # runs whose events stay parsed in memory; the least recently asked is dropped


class _Json(JSONResponse):
    """JSON without NaN (None instead), as browsers' JSON.parse needs; ints beyond 64 bits as JSON numbers too."""

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
        except TypeError:
            return json.dumps(_finite(content), default=repr).encode()


def _finite(value: Any) -> Any:
    """`value` with non-finite floats as None and keys as str (what `orjson` does), for the stdlib encoder."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class Dashboard:
    """The state the API serves from: the root store, the runs view, one `RunLog` per run asked about."""

    def __init__(self, store: Store, catalog: Catalog, refresh_seconds: float):
        self.store, self.catalog = store, catalog
        self.runs = RunsView(store, catalog, refresh_seconds)
        self._logs: dict[str, RunLog] = {}
        self._summaries: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def run_log(self, folder: str, name: str) -> RunLog:
        """The shared `RunLog` of one run (a bounded cache)."""
        key = f"{folder}/{name}"
        with self._lock:
            log = self._logs.pop(key, None) or RunLog(self.store, folder, name)
            self._logs[key] = log
            while len(self._logs) > 1 and (len(self._logs) > MAX_RUN_LOGS
                                           or sum(len(kept.events) for kept in self._logs.values()) > MAX_CACHED_EVENTS):
                self._logs.pop(next(iter(self._logs)))
            return log

    def _summary(self, folder: str, name: str) -> Any:
        """The run's summary record, read again at most every `MIN_CHECK_SECONDS` (many pages poll one run)."""
        key, now = f"{folder}/{name}", time.monotonic()
        with self._lock:
            cached = self._summaries.get(key)
        if cached is not None and now - cached[0] < MIN_CHECK_SECONDS:
            return cached[1]
        record = read_run(self.store, folder, name)
        with self._lock:
            self._summaries[key] = (now, record)
            while len(self._summaries) > MAX_RUN_LOGS:
                self._summaries.pop(next(iter(self._summaries)))
        return record

    def known_run(self, request: Request) -> tuple[str, str, Any]:
        """(folder, name, summary record) of the run `?id=` names; `ApiError` 400 / 404 otherwise."""
        run_id = request.query_params.get("id")
        folder, name = check_run_id(run_id)
        record = self._summary(folder, name)
        if record is None:
            raise ApiError(404, f"no run {run_id!r} under {self.store.url}")
        return folder, name, record

    # -- endpoints (plain functions: Starlette runs them in its thread pool, as store I/O blocks) ----

    def info(self, request: Request) -> Response:
        return _Json({"root": self.store.url, "catalog": self.catalog.url, "version": version("expstore"),
                      "refresh_seconds": self.runs.refresh_seconds, "sync_error": self.runs.sync_error})

    def runs_page(self, request: Request) -> Response:
        q = request.query_params
        limit = int_param(q, "limit", 100, 1, MAX_PAGE)
        offset = int_param(q, "offset", 0, 0, MAX_OFFSET)
        return _Json(self.runs.page(q.get("filter"), q.getlist("order_by"), limit, offset))

    def run(self, request: Request) -> Response:
        folder, name, record = self.known_run(request)
        config, environment = self.run_log(folder, name).config()
        doc = run_row({"run_id": record.run_id, "name": record.name, "url": record.url, "status": record.status,
                       "start_time": record.start_time, "end_time": record.end_time, "duration_seconds": record.duration_seconds,
                       **{f"params.{k}": v for k, v in record.params.items()},
                       **{f"metrics.{k}": v for k, v in record.metrics.items()},
                       **{f"tags.{k}": v for k, v in record.tags.items()}})
        ckpt = checkpoint_folder(self.store, folder, name)
        return _Json({**doc, "config": config, "environment": environment,
                      "checkpoints": None if ckpt is None else f"{self.store.url.rstrip('/')}/{ckpt}"})

    def metrics(self, request: Request) -> Response:
        folder, name, _ = self.known_run(request)
        return _Json(self.run_log(folder, name).metrics_since(int_param(request.query_params, "since", 0, 0)))

    def events(self, request: Request) -> Response:
        folder, name, _ = self.known_run(request)
        q = request.query_params
        since = int_param(q, "since", 0, 0) if q.get("since") not in (None, "") else None
        return _Json(self.run_log(folder, name).events_since(since, int_param(q, "limit", 200, 1, 10_000)))

    def checkpoints(self, request: Request) -> Response:
        folder, name, _ = self.known_run(request)
        return _Json({"checkpoints": list_checkpoints(self.store, checkpoint_folder(self.store, folder, name), name)})

    def verify(self, request: Request) -> Response:
        folder, name, _ = self.known_run(request)
        q = request.query_params
        if q.get("iteration") in (None, ""):
            raise ApiError(400, "give the checkpoint as ?iteration=<n>")
        iteration = int_param(q, "iteration", 0, 0)
        found = verify_checkpoint(self.store, checkpoint_folder(self.store, folder, name), name, iteration)
        if found is None:
            raise ApiError(404, f"run {request.query_params.get('id')!r} has no checkpoint of iteration {iteration}")
        return _Json(found)


def _api_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        return _Json({"error": exc.message}, status_code=exc.status)
    if isinstance(exc, StoreError):  # the store stopped answering, or holds something unreadable
        return _Json({"error": f"reading the store failed: {exc}"}, status_code=503)
    if isinstance(exc, HTTPException):
        return _Json({"error": exc.detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))
    return _Json({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


def create_app(root: str | Store, *, catalog: str | Catalog | None = None, token: str | None = None,
               refresh_seconds: float = 2.0, **storage_options: Any) -> Any:
    """The dashboard of `root` (any store URL) as an ASGI app; `catalog` as `open_catalog` takes it;
    with `token`, every request must carry it. The catalog syncs from `root` while the app runs."""
    check_token(token)
    if not (isinstance(refresh_seconds, (int, float)) and refresh_seconds > 0):
        raise ValueError(f"refresh_seconds must be a number > 0, got {refresh_seconds!r}")
    opened_catalog = catalog if isinstance(catalog, Catalog) else open_catalog(catalog)
    opening = contextlib.ExitStack()
    try:
        store = opening.enter_context(opened_store(root, **storage_options))
    except BaseException:
        if opened_catalog is not catalog:
            opened_catalog.close()
        raise
    if opened_catalog is not catalog:
        opening.callback(opened_catalog.close)
    dashboard = Dashboard(store, opened_catalog, float(refresh_seconds))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with opening:
            dashboard.runs.start()
            try:
                yield
            finally:
                dashboard.runs.stop()

    def endpoint(method: str) -> Any:
        def call(request: Request) -> Response:
            return getattr(dashboard, method)(request)

        return call

    routes = [
        Route("/", lambda request: FileResponse(str(STATIC / "index.html"))),
        Route("/api/info", endpoint("info")),
        Route("/api/runs", endpoint("runs_page")),
        Route("/api/run", endpoint("run")),
        Route("/api/metrics", endpoint("metrics")),
        Route("/api/events", endpoint("events")),
        Route("/api/checkpoints", endpoint("checkpoints")),
        Route("/api/verify", endpoint("verify")),
        Mount("/static", StaticFiles(directory=str(STATIC))),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ApiError: _api_error, HTTPException: _api_error, Exception: _api_error})
    app.add_middleware(AccessGate, token=token)
    return app
