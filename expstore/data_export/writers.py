"""Export experiment results (a list of dicts) to JSON, CSV, pickle, summary JSON and parquet on any store.

The functions and file layouts are those of the original export module; what is new is where the
bytes go and how failures behave:

* Every `output_path` is the URL or path of one file (`results/run.json`,
  `s3://bucket/runs/run.json`, `runs/exp.h5/tables/run.json`), or a folder URL or an open `Store`
  together with ``filename="run.json"`` (not `key=`, which is an S3 storage option). Storage
  options (`endpoint_url=...`) pass through as keyword arguments, as for `open_store`. Each
  function returns the URL of the file it wrote.
* Each file is serialized completely in memory, then stored with ONE atomic `Store.write`: a
  reader sees the old file or the new one, and a failed export (bad input, a value that cannot
  be serialized, an unwritable destination) leaves an existing file of the same name intact.
* Bad input raises a clear error: `TypeError` when `results` is not a list of dicts, and
  `TypeError` / `ValueError` naming the row and key (``results[3]['model']``) of a value the
  format cannot hold.
* JSON writes nan and ±inf as Python's `json` does (``NaN``, ``Infinity``, ``-Infinity``), as the
  original did; `load_results_json` reads them back. The output is byte for byte what
  ``json.dumps(doc, indent=2 if pretty else None, cls=NumpyEncoder)`` gives, produced faster for
  flat rows (column by column through `json_rows` when pyarrow is installed).
* A CSV cell holds the value as text; a list, tuple, dict or numpy array is written as its JSON
  text (``[1, 2, 3]``, never truncated); a value JSON cannot hold cannot go into a CSV either.

Pickle is read only by `load_results_pickle` (unpickling can run any code). Parquet needs ``expstore[pandas]``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptData
from ..format.json_rows import COMPACT, PRETTY_RESULTS, encode_flat_rows
from ..store.base import Store
from ..store.locate import join_url, opened_store, split_url_at
from .inputs import check_export_metadata, check_result_rows

if TYPE_CHECKING:
    import pandas as pd

Location = str | os.PathLike[str] | Store
Results = Sequence[Mapping[str, Any]]
_PLAIN = frozenset({str, int, float, bool, type(None)})
_SERIALIZE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError, pickle.PicklingError, AttributeError)


class NumpyEncoder(json.JSONEncoder):
    """JSON encoder that writes numpy arrays as lists and numpy scalars as Python numbers."""

    def default(self, obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        return super().default(obj)


_COMPACT = NumpyEncoder()
_INDENTED = NumpyEncoder(indent=2)
_FLAT_ROW = NumpyEncoder(separators=(",\n      ", ": "))  # a flat row's items, as indent=2 puts them at depth 2


# ---- where a file goes ---------------------------------------------------------------------------


def split_location(location: str | os.PathLike[str]) -> tuple[str, str]:
    """Split the URL or path of one file into (store URL, key): ``s3://b/dir/x.json`` -> (``s3://b/dir``, ``x.json``).

    A path through a container (``runs/x.h5/sub/r.json``) gives the store ``runs/x.h5/sub``, which
    `open_store` opens as the container with the key prefix ``sub``.
    """
    try:
        return split_url_at(location)
    except ValueError:
        text = os.fspath(location)
        raise ValueError(f"{text!r} names a folder, not a file: give the file's name (…/results.json) or filename=") from None


@contextmanager
def _target(location: Location, filename: str | None, storage_options: dict[str, Any]) -> Iterator[tuple[Store, str]]:
    """(store, key) of a file location; a store this opened is closed afterwards."""
    if filename is None:
        if isinstance(location, Store):
            raise TypeError(f"with an open store ({location.url!r}) pass filename= to name the file")
        location, filename = split_location(location)
    with opened_store(location, **storage_options) as store:
        yield store, filename


def _store_bytes(
    location: Location, filename: str | None, data: bytes | list[bytes | memoryview], storage_options: dict[str, Any]
) -> str:
    with _target(location, filename, storage_options) as (store, key):
        store.write(key, data)
        return join_url(store.url, key)


def _load_bytes(location: Location, filename: str | None, storage_options: dict[str, Any]) -> bytes:
    with _target(location, filename, storage_options) as (store, key):
        return store.read(key)


# ---- finding the culprit ------------------------------------------------------------------------


def _culprit(results: Results, metadata: Mapping[str, Any], encode: Callable[[Any], object]) -> Exception:
    """The error for the first row/key (or metadata key) whose key or value `encode` rejects."""
    sources = [("metadata", metadata)] + [(f"results[{i}]", row) for i, row in enumerate(results)]
    for where, mapping in sources:
        for k, v in mapping.items():
            try:
                encode({k: v})
            except _SERIALIZE_ERRORS as exc:
                kind = ValueError if isinstance(exc, ValueError) else TypeError
                return kind(f"cannot serialize {where}[{k!r}] ({type(v).__name__}): {exc}")
    return TypeError("cannot serialize the results")  # pragma: no cover - encode failed on the whole only


def _encode(encode: Callable[[Any], Any], doc: Any, results: Results, metadata: Mapping[str, Any]) -> Any:
    """`encode(doc)`; on failure, find the row and key at fault by encoding each item alone the same way."""
    try:
        return encode(doc)
    except _SERIALIZE_ERRORS:
        item_encode = _COMPACT.encode if encode is _pretty_json else encode
        raise _culprit(results, metadata, item_encode) from None


# ---- serializing ---------------------------------------------------------------------------------


def _document(results: Results, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The layout of a JSON or pickle export: timestamp, count, metadata, results."""
    return {
        "timestamp": datetime.now().isoformat(),
        "num_experiments": len(results),
        "metadata": dict(metadata),
        "results": results,
    }


def _pretty_row(row: Mapping[str, Any]) -> str:
    """One row as ``json.dumps(..., indent=2)`` writes it at depth 2; a flat row goes through the C encoder."""
    if row and all(type(v) in _PLAIN for v in row.values()):
        return "{\n      " + _FLAT_ROW.encode(row)[1:-1] + "\n    }"
    return _INDENTED.encode(row).replace("\n", "\n    ")  # json escapes newlines inside strings


def _pretty_flat_rows(results: Results) -> str | None:
    """The results list at depth 1 as ``json.dumps(..., indent=2)`` writes it, in one C-encoder
    call, when every row is a non-empty dict of plain values; else None.

    The encoder puts ``},\n      {`` only between rows then (JSON escapes newlines in strings,
    and no value is a container), so one replace turns the row separators into indent=2's."""
    if not all(type(row) is dict and row for row in results):
        return None
    if not {type(v) for row in results for v in row.values()} <= _PLAIN:
        return None
    inner = _FLAT_ROW.encode(results)[2:-2]  # without the outer "[{" and "}]"
    return "[\n    {\n      " + inner.replace("},\n      {", "\n    },\n    {\n      ") + "\n    }\n  ]"


def _pretty_json(doc: dict[str, Any]) -> str:
    """``json.dumps(doc, indent=2, cls=NumpyEncoder)`` of the export layout, flat rows in one call."""
    results = doc["results"]
    body = _pretty_flat_rows(results) if results else "[]"
    if body is None:
        body = "[\n    " + ",\n    ".join(_pretty_row(row) for row in results) + "\n  ]"
    metadata = _INDENTED.encode(doc["metadata"]).replace("\n", "\n  ")
    timestamp = _COMPACT.encode(doc["timestamp"])
    return (
        f'{{\n  "timestamp": {timestamp},\n  "num_experiments": {doc["num_experiments"]},\n'
        f'  "metadata": {metadata},\n  "results": {body}\n}}'
    )


def _json_parts(results: Results, metadata: Mapping[str, Any], pretty: bool) -> list[bytes | memoryview]:
    """The JSON export as buffers to store back to back. Flat rows are formatted column by column
    (`json_rows`, with pyarrow), the rest of the document by `json`; the bytes are the same."""
    encode = _pretty_json if pretty else _COMPACT.encode
    doc = _document(results, metadata)
    rows = encode_flat_rows(results, PRETTY_RESULTS if pretty else COMPACT) if results else None
    if rows is None:
        return [_encode(encode, doc, results, metadata).encode("utf-8")]
    doc["results"] = []  # the last key: the document's last "[]" is where the rows go
    head, _, tail = _encode(encode, doc, results, metadata).rpartition("[]")
    return [head.encode("utf-8"), *rows, tail.encode("utf-8")]


def _csv_cell(value: Any) -> Any:
    """A value as the csv module should write it: plain values as they are, containers as JSON text."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        return value.item()
    if isinstance(value, float):  # float subclasses: csv would write their repr
        return float(value)
    return _COMPACT.encode(value)


def _csv_bytes(results: Results) -> bytes:
    """The CSV export: header = sorted union of keys; no results give an empty file (no columns, so no header)."""
    if not results:
        return b""
    keys: set[Any] = set()
    for row in results:
        keys.update(row)
    for key in keys:
        if not isinstance(key, str):
            i = next(i for i, row in enumerate(results) if key in row)
            raise TypeError(f"CSV column names must be str: results[{i}] has the key {key!r} ({type(key).__name__})")
    header = sorted(keys)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    try:
        writer.writerows([[_csv_cell(row.get(k)) for k in header] for row in results])
    except _SERIALIZE_ERRORS:
        raise _culprit(results, {}, lambda item: [_csv_cell(v) for v in item.values()]) from None
    return buf.getvalue().encode("utf-8")


def _pickle_bytes(results: Results, metadata: Mapping[str, Any]) -> bytes:
    doc = _document(results, metadata)
    return _encode(lambda d: pickle.dumps(d, protocol=pickle.HIGHEST_PROTOCOL), doc, results, metadata)


def summary_statistics(results: Results) -> dict[str, dict[str, float | int]]:
    """Per numeric field: mean, std (population), min, max, median over the non-nan values, with count and nan_count.

    A field is numeric when every row that has it holds an int or float (numpy ones too, bools
    not) or None (skipped); any other value leaves the field out.
    """
    values: dict[str, list[float]] = {}
    excluded: set[str] = set()
    for i, row in enumerate(check_result_rows(results)):
        for key, v in row.items():
            if v is None or key in excluded:
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                excluded.add(key)
                continue
            try:
                values.setdefault(key, []).append(float(v))
            except OverflowError:
                raise ValueError(f"results[{i}][{key!r}] = {v} is too large for summary statistics") from None
    stats = {}
    for key in sorted(values.keys() - excluded, key=str):
        arr = np.asarray(values[key], dtype=np.float64)
        nan = np.isnan(arr)
        kept = arr[~nan]
        entry: dict[str, float | int] = dict.fromkeys(("mean", "std", "min", "max", "median"), math.nan)
        if kept.size:
            with np.errstate(invalid="ignore"):  # std of [inf] is nan, as numpy says
                entry = {
                    "mean": float(np.mean(kept)),
                    "std": float(np.std(kept)),
                    "min": float(np.min(kept)),
                    "max": float(np.max(kept)),
                    "median": float(np.median(kept)),
                }
        entry["count"] = int(kept.size)
        entry["nan_count"] = int(nan.sum())
        stats[key] = entry
    return stats


def _summary_bytes(results: Results) -> bytes:
    statistics = summary_statistics(results)
    for key in statistics:
        if not isinstance(key, (str, int, float, bool, type(None))):  # what JSON object keys can be
            i = next(i for i, row in enumerate(results) if key in row)
            raise TypeError(f"cannot write summary statistics: results[{i}] has the key {key!r} ({type(key).__name__}); JSON keys must be str")
    summary = {
        "timestamp": datetime.now().isoformat(),
        "num_experiments": len(results),
        "statistics": statistics,
    }
    return json.dumps(summary, indent=2).encode("utf-8")


# ---- the export functions ----------------------------------------------------------------------


def export_results_json(
    results: Results,
    output_path: Location,
    metadata: Mapping[str, Any] | None = None,
    pretty: bool = True,
    *,
    filename: str | None = None,
    **storage_options: Any,
) -> str:
    """Write ``{"timestamp", "num_experiments", "metadata", "results"}`` as JSON (indent 2 when `pretty`); return its URL."""
    results, metadata = check_result_rows(results), check_export_metadata(metadata)
    return _store_bytes(output_path, filename, _json_parts(results, metadata, pretty), storage_options)


def export_results_csv(results: Results, output_path: Location, *, filename: str | None = None, **storage_options: Any) -> str:
    """Write one CSV row per result, header = the sorted union of keys, missing values empty; return its URL."""
    return _store_bytes(output_path, filename, _csv_bytes(check_result_rows(results)), storage_options)


def export_results_pickle(
    results: Results,
    output_path: Location,
    metadata: Mapping[str, Any] | None = None,
    *,
    filename: str | None = None,
    **storage_options: Any,
) -> str:
    """Pickle the JSON export's layout with the exact objects (for Python readers only); return its URL."""
    results, metadata = check_result_rows(results), check_export_metadata(metadata)
    return _store_bytes(output_path, filename, _pickle_bytes(results, metadata), storage_options)


def export_summary_statistics(
    results: Results, output_path: Location, *, filename: str | None = None, **storage_options: Any
) -> str:
    """Write ``{"timestamp", "num_experiments", "statistics": {field: {mean, std, min, max, median, count, nan_count}}}``."""
    return _store_bytes(output_path, filename, _summary_bytes(check_result_rows(results)), storage_options)


def export_all_formats(
    results: Results,
    output_dir: Location,
    base_name: str = "results",
    metadata: Mapping[str, Any] | None = None,
    **storage_options: Any,
) -> dict[str, str]:
    """Write `base.json`, `base.csv`, `base.pkl` and `base_summary.json` into `output_dir`; return their URLs.

    All four are serialized before the first is written, so bad input leaves every old file intact.
    """
    results, metadata = check_result_rows(results), check_export_metadata(metadata)
    files = {
        "json": (f"{base_name}.json", _json_parts(results, metadata, True)),
        "csv": (f"{base_name}.csv", _csv_bytes(results)),
        "pickle": (f"{base_name}.pkl", _pickle_bytes(results, metadata)),
        "summary": (f"{base_name}_summary.json", _summary_bytes(results)),
    }
    with opened_store(output_dir, **storage_options) as store:
        urls = {}
        for kind, (name, data) in files.items():
            store.write(name, data)
            urls[kind] = join_url(store.url, name)
        return urls


def load_results_json(input_path: Location, *, filename: str | None = None, **storage_options: Any) -> Any:
    """Read a JSON export (``NaN``/``Infinity`` included) back into Python objects; `CorruptData`
    naming the file when it is not JSON (a checkpoint, a pickle)."""
    with _target(input_path, filename, storage_options) as (store, key):
        try:
            return json.loads(store.read(key))
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise CorruptData(f"not a JSON export: {exc}", url=store.url, key=key) from None


def load_results_pickle(input_path: Location, *, filename: str | None = None, **storage_options: Any) -> Any:
    """Unpickle a pickle export. Only for files you trust: unpickling can run any code."""
    return pickle.loads(_load_bytes(input_path, filename, storage_options))


# ---- parquet (DataFrames) ------------------------------------------------------------------------


def _pandas() -> Any:
    try:
        import pandas

        return pandas
    except ImportError as exc:
        raise ImportError(f'parquet export needs pandas and pyarrow: pip install "expstore[pandas]" ({exc})') from exc


def parquet_bytes(df: pd.DataFrame) -> bytes:
    """The DataFrame as parquet (pyarrow), with `df.attrs` stored as JSON in the schema metadata."""
    pd = _pandas()
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"export_results_parquet takes a pandas DataFrame, got {type(df).__name__}")
    attrs = {}
    for k, v in df.attrs.items():
        try:
            attrs[k] = json.loads(_COMPACT.encode({k: v}))[str(k)]
        except _SERIALIZE_ERRORS as exc:
            raise TypeError(f"cannot store df.attrs[{k!r}] ({type(v).__name__}) in parquet: {exc}") from None
    frame = df.copy(deep=False)
    frame.attrs = attrs
    buf = io.BytesIO()
    frame.to_parquet(buf, engine="pyarrow")
    return buf.getvalue()


def read_parquet_bytes(data: bytes) -> pd.DataFrame:
    """A DataFrame from parquet bytes, `attrs` restored."""
    return _pandas().read_parquet(io.BytesIO(data), engine="pyarrow")


def export_results_parquet(df: pd.DataFrame, output_path: Location, *, filename: str | None = None, **storage_options: Any) -> str:
    """Write a DataFrame as one parquet file, `df.attrs` kept; return its URL."""
    return _store_bytes(output_path, filename, parquet_bytes(df), storage_options)


def load_results_parquet(input_path: Location, *, filename: str | None = None, **storage_options: Any) -> pd.DataFrame:
    """Read a parquet file into a DataFrame with its `attrs`."""
    return read_parquet_bytes(_load_bytes(input_path, filename, storage_options))
