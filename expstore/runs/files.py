"""The bytes of a run's files: DataFrames as pickle or parquet, checkpoint metrics as JSON, legacy metadata."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd

from ..data_export import parquet_bytes, read_parquet_bytes
from ..errors import CorruptData
from ..store.base import Store
from .inputs import plain_json
from .layout import RunKeys

__all__ = ["frame_bytes", "legacy_metadata", "metrics_from_json", "metrics_json", "read_frame"]


def frame_bytes(df: pd.DataFrame, ext: str) -> bytes:
    """`df` (attrs included) as the file `ext` names: ``.parquet`` or ``.pkl``."""
    if ext == ".parquet":
        return parquet_bytes(df)
    buf = io.BytesIO()
    df.to_pickle(buf, compression=None)
    return buf.getvalue()


def read_frame(store: Store, key: str) -> pd.DataFrame:
    """The DataFrame stored at `key`, read by its extension."""
    data = store.read(key)
    if key.endswith(".parquet"):
        return read_parquet_bytes(data)
    return pd.read_pickle(io.BytesIO(data), compression=None)  # a .pkl run: unpickling is what the call asks for


def metrics_json(metrics: dict[str, Any]) -> bytes:
    """Checkpoint metrics as JSON entries, so int and str dataset keys both come back as they were."""
    entries = [
        {"model_type": m, "dataset": d, "checkpoint": n, "metrics": values}
        for m, datasets in metrics.items()
        for d, named in datasets.items()
        for n, values in named.items()
    ]
    doc = {"format": "expstore.checkpoint-metadata", "version": 1, "entries": entries}
    return json.dumps(plain_json(doc, "checkpoint metrics"), indent=2).encode()


def metrics_from_json(data: bytes, store: Store, key: str) -> dict[str, Any]:
    """The checkpoint metrics `metrics_json` wrote; `CorruptData` naming `key` when malformed."""
    try:
        metrics: dict[str, Any] = {}
        for e in json.loads(data)["entries"]:
            metrics.setdefault(e["model_type"], {}).setdefault(e["dataset"], {})[e["checkpoint"]] = e["metrics"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"malformed checkpoint metadata: {exc}", url=store.url, key=key) from None
    return metrics


def legacy_metadata(store: Store, run: RunKeys) -> dict[str, Any]:
    """The metadata of a legacy run's ``_meta.json`` (its ``meta`` object merged in); {} for a run without one."""
    if run.legacy_meta is None:
        return {}
    try:
        doc = json.loads(store.read(run.legacy_meta))
    except ValueError as exc:
        raise CorruptData(f"malformed legacy metadata: {exc}", url=store.url, key=run.legacy_meta) from None
    if not isinstance(doc, dict):
        raise CorruptData("legacy metadata is not a JSON object", url=store.url, key=run.legacy_meta)
    inner = doc.get("meta")
    return {**{k: v for k, v in doc.items() if k != "meta"}, **inner} if isinstance(inner, dict) else doc
