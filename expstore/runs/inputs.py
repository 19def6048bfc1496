"""Checks of what `save_run` is given: the DataFrames, the essential metadata and the checkpoints."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..data_export import NumpyEncoder
from .layout import CHECKPOINT_METADATA, check_name

__all__ = [
    "DERIVABLE",
    "RESERVED",
    "DerivableMetadataWarning",
    "check_epochs_free_model_types",
    "check_model_frames",
    "metadata_to_store",
    "model_state",
    "plain_json",
    "split_checkpoints",
]

RESERVED = ("section", "timestamp", "model_type")
# derivable field -> (column it comes from, how)
DERIVABLE = {
    "grids": ("grid_size", "unique"),
    "num_datasets": ("dataset_idx", "nunique"),
    "dataset_names": ("dataset_name", "unique"),
    "depths": ("depth", "unique"),
    "activations": ("activation", "unique"),
}
_EPOCHS_LIKE = re.compile(r"^e\d+_")  # a model type that the file names would read back as an epochs part
_JSON = NumpyEncoder()


class DerivableMetadataWarning(UserWarning):
    """save_run was given metadata that the DataFrames already hold; it is not stored."""


def plain_json(value: Any, where: str) -> Any:
    """`value` as plain JSON data (numpy scalars and arrays converted); `TypeError` naming `where` otherwise."""
    try:
        return json.loads(_JSON.encode(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where} must be JSON data (str, number, bool, None, list, dict), got {type(value).__name__}: {exc}") from None


def metadata_to_store(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata to store: reserved names refused, derivable ones dropped with a warning, epochs checked."""
    for name in RESERVED:
        if name in metadata:
            raise TypeError(f"save_run sets {name!r} itself; do not pass it as metadata")
    derivable = sorted(set(metadata) & set(DERIVABLE))
    if derivable:
        warnings.warn(
            f"not storing derivable metadata {derivable}: it is in the DataFrames (use derive_metadata(df))",
            DerivableMetadataWarning,
            stacklevel=3,
        )
    epochs = metadata.get("epochs")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0):
        raise ValueError(f"epochs must be an int >= 0 or None, got {epochs!r}")
    return {k: plain_json(v, f"metadata {k!r}") for k, v in metadata.items() if k not in DERIVABLE}


def check_model_frames(results: Any) -> dict[str, pd.DataFrame]:
    """`results` as ``{model_type: DataFrame}``: non-empty, each model type a valid name, each value a DataFrame."""
    if not isinstance(results, Mapping) or not results:
        raise TypeError(f"results must be a non-empty dict {{model_type: DataFrame}}, got {type(results).__name__}")
    for model_type, df in results.items():
        check_name(model_type, "model type")
        if model_type == CHECKPOINT_METADATA:
            raise ValueError(f"{CHECKPOINT_METADATA!r} cannot be a model type: it names the checkpoint metrics file")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"results[{model_type!r}] must be a pandas DataFrame, got {type(df).__name__}")
    return dict(results)


def check_epochs_free_model_types(model_types: list[Any]) -> None:
    """`ValueError` for a model type that a run without epochs would read back as an epochs part (``e5_cnn``)."""
    for model_type in model_types:
        if _EPOCHS_LIKE.match(str(model_type)):
            raise ValueError(
                f"model type {model_type!r} would read back as epochs={str(model_type)[1:].partition('_')[0]} "
                f"and model type {str(model_type).partition('_')[2]!r} (file names are <section>_<TS>[_e<epochs>]_<model>): "
                "pass epochs= or choose another model type name"
            )


def split_checkpoints(checkpoints: Any) -> tuple[dict[str, Any], list[tuple[str, Any, str, Any, dict[str, Any]]]]:
    """(metrics without `model`, [(model_type, dataset, name, weights, metrics)] for entries with a `model`)."""
    if not isinstance(checkpoints, Mapping):
        raise TypeError(f"checkpoints must be a dict {{model_type: {{dataset: {{name: {{...}}}}}}}}, got {type(checkpoints).__name__}")
    metrics: dict[str, Any] = {}
    weights = []
    for model_type, datasets in checkpoints.items():
        check_name(model_type, "model type in checkpoints")
        if not isinstance(datasets, Mapping):
            raise TypeError(f"checkpoints[{model_type!r}] must be a dict {{dataset: {{name: {{...}}}}}}")
        for dataset, named in datasets.items():
            check_name(dataset, f"dataset in checkpoints[{model_type!r}]")
            if not isinstance(named, Mapping):
                raise TypeError(f"checkpoints[{model_type!r}][{dataset!r}] must be a dict {{name: {{...}}}}")
            for name, entry in named.items():
                where = f"checkpoints[{model_type!r}][{dataset!r}][{name!r}]"
                check_name(name, f"checkpoint name in {where}")
                if not isinstance(entry, Mapping):
                    raise TypeError(f"{where} must be a dict of metrics (and 'model'), got {type(entry).__name__}")
                kept = {k: v for k, v in entry.items() if k != "model"}
                metrics.setdefault(model_type, {}).setdefault(dataset, {})[name] = kept
                if "model" in entry:
                    weights.append((model_type, dataset, name, entry["model"], kept))
    return metrics, weights


def model_state(model: Any) -> Any:
    """The weights to store: `model.state_dict()` when it has one (array-likes as numpy), else `model` itself."""
    if callable(getattr(model, "state_dict", None)):
        return {k: np.asarray(v) if hasattr(v, "__array__") else v for k, v in model.state_dict().items()}
    return model
