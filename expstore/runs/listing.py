"""`list_runs`: the section runs and the logged runs under a root, from one key listing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..experiment_logger.summaries import logged_runs
from ..store.locate import join_url, opened_store
from .layout import runs_in

__all__ = ["list_runs"]

_LOGGED_FIELDS = ("status", "start_time", "end_time", "duration_seconds", "ranks", "final_metrics", "summary", "heartbeat_time")


def list_runs(
    output_dir: Any, *, storage_options: Mapping[str, Any] | None = None, kind: str | None = None
) -> list[dict[str, Any]]:
    """The runs under `output_dir` from one listing: the section runs, then the logged runs of the catalog.

    Section runs (`save_run`), oldest first per section:
    ``{"section", "timestamp", "epochs", "model_types", "legacy"}``. Logged runs (one per
    experiment logger output, from its small ``<name>_run.json`` summary, one GET each; no log is
    read), sorted by URL: ``{"kind": "logged", "name", "url", "logs_url", "status", "start_time",
    "end_time", "duration_seconds", "ranks", "final_metrics", "summary", "heartbeat_time"}``;
    ``status`` is ``stale`` for a run still ``running`` by its summary whose logger stopped writing
    its heartbeat (docs/runs.md). `kind` ``"section"`` or ``"logged"`` returns one kind only.
    """
    if kind not in (None, "section", "logged"):
        raise ValueError(f"kind must be None, 'section' or 'logged', got {kind!r}")
    with opened_store(output_dir, **dict(storage_options or {})) as store:
        keys = store.list("")
        runs = {} if kind == "logged" else runs_in(store, keys=keys)
        logged = [] if kind == "section" else [_logged(store.url, entry) for entry in logged_runs(store, keys)]
    sections = [
        {
            "section": run.section,
            "timestamp": run.timestamp,
            "epochs": run.epochs,
            "model_types": sorted(run.frames),
            "legacy": run.legacy_meta is not None,
        }
        for _, run in sorted(runs.items())
        if run.frames
    ]
    return sections + logged


def _logged(root: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A catalog entry (`experiment_logger.summaries.logged_runs`) as `list_runs` returns it: folders as URLs."""
    url = join_url(root, entry["run_folder"]) if entry["run_folder"] else root
    logs_url = join_url(root, entry["folder"]) if entry["folder"] else root
    return {"kind": "logged", "name": entry["name"], "url": url, "logs_url": logs_url, **{k: entry[k] for k in _LOGGED_FIELDS}}
