"""Saving and loading one section run: its DataFrames, checkpoint metrics and model weights, in any store."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..checkpointing import CheckpointManager
from ..errors import KeyNotFound
from ..store.locate import opened_store
from .files import frame_bytes, legacy_metadata, metrics_from_json, metrics_json, read_frame
from .inputs import (
    DERIVABLE,
    check_epochs_free_model_types,
    check_model_frames,
    metadata_to_store,
    model_state,
    split_checkpoints,
)
from .layout import CHECKPOINT_METADATA, RunKeys, check_name, find_run, free_timestamp

__all__ = ["derive_metadata", "load_checkpoint_metadata", "load_run", "load_run_checkpoint", "save_run"]

FORMATS = {"pkl": ".pkl", "parquet": ".parquet"}


def save_run(
    results: Mapping[str, pd.DataFrame],
    section: str,
    output_dir: Any,
    checkpoints: Mapping[str, Any] | None = None,
    format: str = "pkl",
    *,
    storage_options: Mapping[str, Any] | None = None,
    **essential_metadata: Any,
) -> str:
    """Save one DataFrame per model type with the essential metadata in `df.attrs`; return the run's timestamp.

    `checkpoints` metrics go to one small file (no weights); `model` entries go through
    `CheckpointManager`, tagged with the checkpoint's name. Everything is encoded before the first write.
    """
    section = check_name(section, "section")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    ext = FORMATS[format]
    frames = check_model_frames(results)
    essential = metadata_to_store(essential_metadata)
    metrics, weights = split_checkpoints(checkpoints) if checkpoints is not None else ({}, [])
    if essential.get("epochs") is None:
        check_epochs_free_model_types([*frames, *metrics])
    with opened_store(output_dir, **dict(storage_options or {})) as store:
        run = RunKeys(section, free_timestamp(store, section), essential.get("epochs"))
        files = {}
        for model_type, df in frames.items():
            out = df.copy(deep=False)
            out.attrs = {**df.attrs, "section": section, "timestamp": run.timestamp, "model_type": model_type, **essential}
            files[f"{run.base}_{model_type}{ext}"] = frame_bytes(out, ext)
        if metrics:
            encoded = metrics_json(metrics) if format == "parquet" else pickle.dumps(metrics, protocol=pickle.HIGHEST_PROTOCOL)
            files = {f"{run.base}_{CHECKPOINT_METADATA}{'.json' if format == 'parquet' else '.pkl'}": encoded, **files}
        for model_type, dataset, name, model, kept in weights:
            epoch = kept.get("epoch")
            iteration = int(epoch) if isinstance(epoch, (int, np.integer)) and not isinstance(epoch, bool) and epoch >= 0 else 0
            manager = CheckpointManager(store, f"{run.base}_{model_type}_{dataset}_{name}", keep_last_n=None)
            manager.save_checkpoint(model_state(model), iteration, {"model_type": model_type, "dataset": str(dataset)}, tag=name)
        for key, data in files.items():  # DataFrames last: the run shows once they are stored
            store.write(key, data)
        return run.timestamp


def load_run(
    section: str, timestamp: str, output_dir: Any, *, storage_options: Mapping[str, Any] | None = None
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Load a run (new or legacy layout): ``({model_type: DataFrame}, meta)``.

    `meta` merges a legacy ``_meta.json`` with the attrs that all DataFrames share (so not
    ``model_type``: read it from each `df.attrs`). Legacy DataFrames get the same attrs as new ones.
    """
    with opened_store(output_dir, **dict(storage_options or {})) as store:
        run = find_run(store, section, timestamp)
        legacy = legacy_metadata(store, run)
        results = {}
        for model_type, keys in sorted(run.frames.items()):
            key = min(keys, key=lambda k: not k.endswith(".pkl"))  # pickle first when both exist, as runs were always read
            df = read_frame(store, key)
            if not df.attrs:
                df.attrs = {k: v for k, v in legacy.items() if k not in DERIVABLE}
                df.attrs.update(section=run.section, timestamp=run.timestamp, model_type=model_type)
            results[model_type] = df
    shared = [df.attrs for df in results.values()]
    meta = dict(legacy)
    meta.update({k: v for k, v in shared[0].items() if k != "model_type" and all(k in a and a[k] == v for a in shared)})
    return results, meta


def load_checkpoint_metadata(
    section: str, timestamp: str, output_dir: Any, *, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint metrics of a run, ``{model_type: {dataset: {name: {metric: value}}}}``, without loading weights."""
    with opened_store(output_dir, **dict(storage_options or {})) as store:
        run = find_run(store, section, timestamp)
        if run.checkpoint_metadata is None:
            raise KeyNotFound(f"run {section!r} {timestamp!r} has no checkpoint metadata", url=store.url, key=f"{run.base}_{CHECKPOINT_METADATA}.*")
        data = store.read(run.checkpoint_metadata)
        if run.checkpoint_metadata.endswith(".json"):
            return metrics_from_json(data, store, run.checkpoint_metadata)
        return pickle.loads(data)  # the .pkl file of a .pkl run


def load_run_checkpoint(
    section: str,
    timestamp: str,
    output_dir: Any,
    model_type: str,
    dataset: Any,
    name: str = "final",
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The model weights `save_run` stored for one checkpoint: ``{"iteration", "timestamp", "state", "metadata"}``."""
    with opened_store(output_dir, **dict(storage_options or {})) as store:
        run = find_run(store, section, timestamp)
        experiment = f"{run.base}_{check_name(model_type, 'model type')}_{check_name(dataset, 'dataset')}_{check_name(name, 'checkpoint name')}"
        return CheckpointManager(store, experiment, keep_last_n=None).load_checkpoint()


def derive_metadata(df: pd.DataFrame | Mapping[str, pd.DataFrame]) -> dict[str, Any]:
    """The derivable fields (grids, num_datasets, dataset_names, depths, activations) from the columns present."""
    frames = list(df.values()) if isinstance(df, Mapping) else [df]
    derived: dict[str, Any] = {}
    for name, (column, how) in DERIVABLE.items():
        columns = [f[column] for f in frames if column in f.columns]
        if columns:
            values = pd.concat(columns, ignore_index=True).dropna()
            derived[name] = int(values.nunique()) if how == "nunique" else sorted(values.unique().tolist())
    return derived
