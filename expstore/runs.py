"""Runs of an experiment section on any store: one DataFrame per model type, essential metadata in `df.attrs`.

The seed's "metadata storage" layout, in any store (URL, path or `Store`)::

    <section>_<TS>[_e<epochs>]_<model>.pkl                    one DataFrame per model type, attrs inside
    <section>_<TS>[_e<epochs>]_<model>.parquet                the same with format="parquet" (attrs kept)
    <section>_<TS>[_e<epochs>]_checkpoint_metadata.pkl        metrics of the checkpoints, no weights
                                                              (.json for parquet runs)
    <section>_<TS>[_e<epochs>]_<model>_<dataset>_<name>_*     model weights, one CheckpointManager
                                                              experiment per checkpoint, tagged <name>

`<TS>` is ``%Y%m%d_%H%M%S``; ``_e<epochs>`` appears when `epochs` is given. Legacy runs
(``<section>_<TS>_<model>.pkl`` + ``<section>_<TS>_meta.json``) load the same way.

Decisions (docs/runs.md):

* `results` is ``{model_type: DataFrame}``; `checkpoints` is ``{model_type: {dataset: {name:
  {"model": weights, metric: value, ...}}}}`` (names such as ``at_threshold``, ``final``).
  ``model`` is a tree of numpy arrays (or an object with ``state_dict()``) and goes through
  `CheckpointManager`; everything else is metrics.
* The caller's DataFrames are not modified; attrs hold the caller's attrs, then ``section``,
  ``timestamp``, ``model_type`` and the essential metadata, all plain JSON values.
* Derivable metadata (``grids``, ``num_datasets``, ``dataset_names``, ``depths``,
  ``activations``) warns (`DerivableMetadataWarning`) and is dropped: `derive_metadata` computes it.
* Two runs of one section in the same second do not overwrite each other: the later one takes the
  next free second as its timestamp. DataFrames are written last, so a run is visible to
  `load_run` / `list_runs` only once its metrics and weights are stored.
* Storage options go in ``storage_options={...}`` (keyword arguments of `save_run` are metadata).
* Pickle is read only for runs saved as ``.pkl`` (DESIGN §5); parquet runs never unpickle.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from .checkpointing.manager import CheckpointManager
from .data_export.writers import NumpyEncoder, parquet_bytes, read_parquet_bytes
from .errors import CorruptData, KeyNotFound
from .experiment_logger.summaries import logged_runs
from .store.base import Store
from .store.registry import open_store

try:
    import pandas as pd
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f'expstore.runs needs pandas and pyarrow: pip install "expstore[pandas]" ({exc})') from exc

__all__ = [
    "DerivableMetadataWarning",
    "derive_metadata",
    "list_runs",
    "load_checkpoint_metadata",
    "load_run",
    "load_run_checkpoint",
    "migrate_legacy_runs",
    "save_run",
]

TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
FORMATS = {"pkl": ".pkl", "parquet": ".parquet"}
RESERVED = ("section", "timestamp", "model_type")
# derivable field -> (column it comes from, how)
DERIVABLE = {
    "grids": ("grid_size", "unique"),
    "num_datasets": ("dataset_idx", "nunique"),
    "dataset_names": ("dataset_name", "unique"),
    "depths": ("depth", "unique"),
    "activations": ("activation", "unique"),
}
CHECKPOINT_METADATA = "checkpoint_metadata"
_TS_RE = re.compile(r"^\d{8}_\d{6}$")
_RUN_RE = re.compile(r"^(?P<section>.+?)_(?P<ts>\d{8}_\d{6})_(?P<rest>[^/]+)$")
_REST_RE = re.compile(r"^(?:e(?P<epochs>\d+)_)?(?P<name>.+)\.(?P<ext>pkl|parquet|json)$")
_EPOCHS_LIKE = re.compile(r"^e\d+_")  # a model type that the file names would read back as an epochs part
_JSON = NumpyEncoder()


class DerivableMetadataWarning(UserWarning):
    """save_run was given metadata that the DataFrames already hold; it is not stored."""


# ---- names and input -----------------------------------------------------------------------------


def _check_name(value: object, what: str) -> str:
    """A section, model type, dataset or checkpoint name usable inside a key."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not text or "/" in text or "\\" in text or text.startswith("."):
        raise ValueError(f"invalid {what} {value!r}: it must be a non-empty str without '/' or '\\', not starting with '.'")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(f"invalid {what} {value!r}: it contains a control character")
    return text


def _check_timestamp(timestamp: object) -> str:
    if not isinstance(timestamp, str) or not _TS_RE.match(timestamp):
        raise ValueError(f"timestamp must look like 20250101_120000 ({TIMESTAMP_FORMAT}), got {timestamp!r}")
    return timestamp


def _plain(value: Any, where: str) -> Any:
    """`value` as plain JSON data (numpy scalars and arrays converted); `TypeError` naming `where` otherwise."""
    try:
        return json.loads(_JSON.encode(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where} must be JSON data (str, number, bool, None, list, dict), got {type(value).__name__}: {exc}") from None


def _essential(metadata: dict[str, Any]) -> dict[str, Any]:
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
    return {k: _plain(v, f"metadata {k!r}") for k, v in metadata.items() if k not in DERIVABLE}


def _check_results(results: Any) -> dict[str, pd.DataFrame]:
    if not isinstance(results, Mapping) or not results:
        raise TypeError(f"results must be a non-empty dict {{model_type: DataFrame}}, got {type(results).__name__}")
    for model_type, df in results.items():
        _check_name(model_type, "model type")
        if model_type == CHECKPOINT_METADATA:
            raise ValueError(f"{CHECKPOINT_METADATA!r} cannot be a model type: it names the checkpoint metrics file")
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"results[{model_type!r}] must be a pandas DataFrame, got {type(df).__name__}")
    return dict(results)


def _split_checkpoints(checkpoints: Any) -> tuple[dict[str, Any], list[tuple[str, Any, str, Any, dict[str, Any]]]]:
    """(metrics without `model`, [(model_type, dataset, name, weights, metrics)] for entries with a `model`)."""
    if not isinstance(checkpoints, Mapping):
        raise TypeError(f"checkpoints must be a dict {{model_type: {{dataset: {{name: {{...}}}}}}}}, got {type(checkpoints).__name__}")
    metrics: dict[str, Any] = {}
    weights = []
    for model_type, datasets in checkpoints.items():
        _check_name(model_type, "model type in checkpoints")
        if not isinstance(datasets, Mapping):
            raise TypeError(f"checkpoints[{model_type!r}] must be a dict {{dataset: {{name: {{...}}}}}}")
        for dataset, named in datasets.items():
            _check_name(dataset, f"dataset in checkpoints[{model_type!r}]")
            if not isinstance(named, Mapping):
                raise TypeError(f"checkpoints[{model_type!r}][{dataset!r}] must be a dict {{name: {{...}}}}")
            for name, entry in named.items():
                where = f"checkpoints[{model_type!r}][{dataset!r}][{name!r}]"
                _check_name(name, f"checkpoint name in {where}")
                if not isinstance(entry, Mapping):
                    raise TypeError(f"{where} must be a dict of metrics (and 'model'), got {type(entry).__name__}")
                kept = {k: v for k, v in entry.items() if k != "model"}
                metrics.setdefault(model_type, {}).setdefault(dataset, {})[name] = kept
                if "model" in entry:
                    weights.append((model_type, dataset, name, entry["model"], kept))
    return metrics, weights


def _state(model: Any) -> Any:
    """The weights to store: `model.state_dict()` when it has one (array-likes as numpy), else `model` itself."""
    if callable(getattr(model, "state_dict", None)):
        return {k: np.asarray(v) if hasattr(v, "__array__") else v for k, v in model.state_dict().items()}
    return model


# ---- encoding files ------------------------------------------------------------------------------


def _frame_bytes(df: pd.DataFrame, ext: str) -> bytes:
    if ext == ".parquet":
        return parquet_bytes(df)
    buf = io.BytesIO()
    df.to_pickle(buf, compression=None)
    return buf.getvalue()


def _read_frame(store: Store, key: str) -> pd.DataFrame:
    data = store.read(key)
    if key.endswith(".parquet"):
        return read_parquet_bytes(data)
    return pd.read_pickle(io.BytesIO(data), compression=None)  # a .pkl run: unpickling is what the call asks for


def _metrics_json(metrics: dict[str, Any]) -> bytes:
    """Checkpoint metrics as JSON entries, so int and str dataset keys both come back as they were."""
    entries = [
        {"model_type": m, "dataset": d, "checkpoint": n, "metrics": values}
        for m, datasets in metrics.items()
        for d, named in datasets.items()
        for n, values in named.items()
    ]
    doc = {"format": "expstore.checkpoint-metadata", "version": 1, "entries": entries}
    return json.dumps(_plain(doc, "checkpoint metrics"), indent=2).encode()


def _metrics_from_json(data: bytes, store: Store, key: str) -> dict[str, Any]:
    try:
        metrics: dict[str, Any] = {}
        for e in json.loads(data)["entries"]:
            metrics.setdefault(e["model_type"], {}).setdefault(e["dataset"], {})[e["checkpoint"]] = e["metrics"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptData(f"malformed checkpoint metadata: {exc}", url=store.url, key=key) from None
    return metrics


# ---- finding runs --------------------------------------------------------------------------------


@dataclass
class _Run:
    """The keys of one run in a store."""

    section: str
    timestamp: str
    epochs: int | None = None
    frames: dict[str, list[str]] = field(default_factory=dict)  # model type -> its DataFrame keys
    checkpoint_metadata: str | None = None
    legacy_meta: str | None = None

    @property
    def base(self) -> str:
        suffix = "" if self.epochs is None else f"_e{self.epochs}"
        return f"{self.section}_{self.timestamp}{suffix}"


def _add_key(run: _Run, rest: str, key: str) -> None:
    m = _REST_RE.match(rest)
    if not m:
        return
    name, ext = m["name"], m["ext"]
    if m["epochs"] is not None and name != "meta":
        run.epochs = int(m["epochs"])
    if name == CHECKPOINT_METADATA and ext in ("pkl", "json"):
        run.checkpoint_metadata = key
    elif name == "meta" and ext == "json" and m["epochs"] is None:
        run.legacy_meta = key
    elif ext in ("pkl", "parquet"):
        run.frames.setdefault(name, []).append(key)


def _runs_in(store: Store, prefix: str = "", keys: list[str] | None = None) -> dict[tuple[str, str], _Run]:
    runs: dict[tuple[str, str], _Run] = {}
    for key in store.list(prefix) if keys is None else keys:
        m = _RUN_RE.match(key)
        if m:
            run = runs.setdefault((m["section"], m["ts"]), _Run(m["section"], m["ts"]))
            _add_key(run, m["rest"], key)
    return runs


def _find_run(store: Store, section: str, timestamp: str) -> _Run:
    section, timestamp = _check_name(section, "section"), _check_timestamp(timestamp)
    run = _runs_in(store, f"{section}_{timestamp}_").get((section, timestamp))
    if run is None or not run.frames:
        raise KeyNotFound(f"no run of section {section!r} at {timestamp!r}", url=store.url, key=f"{section}_{timestamp}_*")
    return run


@contextmanager
def _opened(output_dir: Any, storage_options: Mapping[str, Any] | None) -> Iterator[Store]:
    store = open_store(output_dir, **dict(storage_options or {}))
    try:
        yield store
    finally:
        if not isinstance(output_dir, Store):
            store.close()


def _free_timestamp(store: Store, section: str) -> str:
    now = datetime.now()
    while True:
        ts = now.strftime(TIMESTAMP_FORMAT)
        if not store.list(f"{section}_{ts}_"):
            return ts
        now += timedelta(seconds=1)


# ---- the API -------------------------------------------------------------------------------------


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
    section = _check_name(section, "section")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    ext = FORMATS[format]
    frames = _check_results(results)
    essential = _essential(essential_metadata)
    metrics, weights = _split_checkpoints(checkpoints) if checkpoints is not None else ({}, [])
    if essential.get("epochs") is None:
        for model_type in [*frames, *metrics]:
            if _EPOCHS_LIKE.match(str(model_type)):
                raise ValueError(
                    f"model type {model_type!r} would read back as epochs={str(model_type)[1:].partition('_')[0]} "
                    f"and model type {str(model_type).partition('_')[2]!r} (file names are <section>_<TS>[_e<epochs>]_<model>): "
                    "pass epochs= or choose another model type name"
                )
    with _opened(output_dir, storage_options) as store:
        run = _Run(section, _free_timestamp(store, section), essential.get("epochs"))
        files = {}
        for model_type, df in frames.items():
            out = df.copy(deep=False)
            out.attrs = {**df.attrs, "section": section, "timestamp": run.timestamp, "model_type": model_type, **essential}
            files[f"{run.base}_{model_type}{ext}"] = _frame_bytes(out, ext)
        if metrics:
            encoded = _metrics_json(metrics) if format == "parquet" else pickle.dumps(metrics, protocol=pickle.HIGHEST_PROTOCOL)
            files = {f"{run.base}_{CHECKPOINT_METADATA}{'.json' if format == 'parquet' else '.pkl'}": encoded, **files}
        for model_type, dataset, name, model, kept in weights:
            epoch = kept.get("epoch")
            iteration = int(epoch) if isinstance(epoch, (int, np.integer)) and not isinstance(epoch, bool) and epoch >= 0 else 0
            manager = CheckpointManager(store, f"{run.base}_{model_type}_{dataset}_{name}", keep_last_n=None)
            manager.save_checkpoint(_state(model), iteration, {"model_type": model_type, "dataset": str(dataset)}, tag=name)
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
    with _opened(output_dir, storage_options) as store:
        run = _find_run(store, section, timestamp)
        legacy = _legacy_meta(store, run)
        results = {}
        for model_type, keys in sorted(run.frames.items()):
            key = min(keys, key=lambda k: not k.endswith(".pkl"))  # the seed prefers pickle when both exist
            df = _read_frame(store, key)
            if not df.attrs:
                df.attrs = {k: v for k, v in legacy.items() if k not in DERIVABLE}
                df.attrs.update(section=run.section, timestamp=run.timestamp, model_type=model_type)
            results[model_type] = df
    shared = [df.attrs for df in results.values()]
    meta = dict(legacy)
    meta.update({k: v for k, v in shared[0].items() if k != "model_type" and all(k in a and a[k] == v for a in shared)})
    return results, meta


def _legacy_meta(store: Store, run: _Run) -> dict[str, Any]:
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


def load_checkpoint_metadata(
    section: str, timestamp: str, output_dir: Any, *, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The checkpoint metrics of a run, ``{model_type: {dataset: {name: {metric: value}}}}``, without loading weights."""
    with _opened(output_dir, storage_options) as store:
        run = _find_run(store, section, timestamp)
        if run.checkpoint_metadata is None:
            raise KeyNotFound(f"run {section!r} {timestamp!r} has no checkpoint metadata", url=store.url, key=f"{run.base}_{CHECKPOINT_METADATA}.*")
        data = store.read(run.checkpoint_metadata)
        if run.checkpoint_metadata.endswith(".json"):
            return _metrics_from_json(data, store, run.checkpoint_metadata)
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
    with _opened(output_dir, storage_options) as store:
        run = _find_run(store, section, timestamp)
        experiment = f"{run.base}_{_check_name(model_type, 'model type')}_{_check_name(dataset, 'dataset')}_{_check_name(name, 'checkpoint name')}"
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


def list_runs(
    output_dir: Any, *, storage_options: Mapping[str, Any] | None = None, kind: str | None = None
) -> list[dict[str, Any]]:
    """The runs under `output_dir` from one listing: the section runs, then the logged runs of the catalog.

    Section runs (`save_run`), oldest first per section, in the seed's format:
    ``{"section", "timestamp", "epochs", "model_types", "legacy"}``. Logged runs (one per
    experiment logger output, from its small ``<name>_run.json`` summary, one GET each; no log is
    read), sorted by URL: ``{"kind": "logged", "name", "url", "logs_url", "status", "start_time",
    "end_time", "duration_seconds", "ranks", "final_metrics", "summary", "heartbeat_time"}``;
    ``status`` is ``stale`` for a run still ``running`` by its summary whose logger stopped writing
    its heartbeat (docs/runs.md). `kind` ``"section"`` or ``"logged"`` returns one kind only.
    """
    if kind not in (None, "section", "logged"):
        raise ValueError(f"kind must be None, 'section' or 'logged', got {kind!r}")
    with _opened(output_dir, storage_options) as store:
        keys = store.list("")
        runs = {} if kind == "logged" else _runs_in(store, keys=keys)
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
    """A catalog entry (`log_catalog.logged_runs`) as `list_runs` returns it: folders as URLs."""
    base = root.rstrip("/")
    url = f"{base}/{entry['run_folder']}" if entry["run_folder"] else root
    logs_url = f"{base}/{entry['folder']}" if entry["folder"] else root
    fields = ("status", "start_time", "end_time", "duration_seconds", "ranks", "final_metrics", "summary", "heartbeat_time")
    return {"kind": "logged", "name": entry["name"], "url": url, "logs_url": logs_url, **{k: entry[k] for k in fields}}


def migrate_legacy_runs(
    output_dir: Any, dry_run: bool = True, *, storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rewrite legacy runs (``_meta.json``) into the attrs layout; return what was (or, with `dry_run`, would be) done.

    Each entry is ``{"section", "timestamp", "write": [keys], "delete": [keys]}``. New files are
    written and read back first; old files are deleted only when every new one reads back equal.
    Other files of the run (model weights) are left as they are.
    """
    with _opened(output_dir, storage_options) as store:
        plans = []
        for run in _runs_in(store).values():
            if run.legacy_meta is None or not run.frames:
                continue
            plans.append(_migrate(store, run, dry_run))
        return plans


def _migrate(store: Store, run: _Run, dry_run: bool) -> dict[str, Any]:
    """Plan, and unless `dry_run` carry out, the rewrite of one legacy run."""
    legacy = _legacy_meta(store, run)
    essential = {k: _plain(v, f"legacy metadata {k!r}") for k, v in legacy.items() if k not in DERIVABLE and k not in RESERVED}
    epochs = essential.get("epochs")
    new = _Run(run.section, run.timestamp, epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None)
    targets = {  # old key -> new key
        key: f"{new.base}_{model_type}.{key.rpartition('.')[2]}" for model_type, keys in run.frames.items() for key in keys
    }
    if run.checkpoint_metadata is not None:
        targets[run.checkpoint_metadata] = f"{new.base}_{CHECKPOINT_METADATA}.{run.checkpoint_metadata.rpartition('.')[2]}"
    old = sorted([*targets, run.legacy_meta])  # type: ignore[list-item]
    plan = {"section": run.section, "timestamp": run.timestamp, "write": sorted(targets.values()),
            "delete": [k for k in old if k not in targets.values()]}
    if dry_run:
        return plan
    expected: dict[str, pd.DataFrame] = {}
    for key, target in targets.items():
        if key == run.checkpoint_metadata:
            store.write(target, store.read(key))
            continue
        df = _read_frame(store, key)
        model_type = next(m for m, keys in run.frames.items() if key in keys)
        df.attrs = {**essential, "section": run.section, "timestamp": run.timestamp, "model_type": model_type}
        store.write(target, _frame_bytes(df, "." + key.rpartition(".")[2]))
        expected[target] = df
    for key, df in expected.items():
        back = _read_frame(store, key)
        try:
            pd.testing.assert_frame_equal(back, df)
        except AssertionError as exc:
            raise CorruptData(f"migrated DataFrame reads back different; old files kept: {exc}", url=store.url, key=key) from None
        if back.attrs != df.attrs:
            raise CorruptData("migrated DataFrame reads back with other attrs; old files kept", url=store.url, key=key)
    for key in plan["delete"]:
        store.delete(key)
    return plan
