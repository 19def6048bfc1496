"""expstore.data_export: the exports on every store, JSON/CSV round trips, bad input."""

from __future__ import annotations

import csv
import io
import json
import math
import pickle
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expstore import Store, StoreError, open_store
from expstore.data_export import (
    NumpyEncoder,
    export_all_formats,
    export_results_csv,
    export_results_json,
    export_results_parquet,
    export_results_pickle,
    export_summary_statistics,
    load_results_json,
    load_results_parquet,
    load_results_pickle,
    split_location,
)

from .conftest import FACADE_BACKENDS

STORE_BACKENDS = FACADE_BACKENDS

ROWS = [
    {"lr": 0.1, "acc": 0.91, "model": "mlp", "converged": True, "seed": np.int64(1)},
    {"lr": 0.01, "acc": np.float32(0.5), "model": "kan", "converged": False, "curve": np.array([1.5, 2.0])},
    {"lr": 0.001, "acc": float("nan"), "model": "siren", "loss": math.inf},
]
PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read(url: str, options: dict[str, Any], key: str) -> bytes:
    with open_store(url, **options) as store:
        return store.read(key)


def parse_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


# ---- every store ---------------------------------------------------------------------------------


def test_export_all_formats_round_trip(store_location: tuple[str, dict[str, Any]]) -> None:
    url, options = store_location
    urls = export_all_formats(ROWS, url, "exp", metadata={"epochs": 10}, **options)
    assert set(urls) == {"json", "csv", "pickle", "summary"}
    assert urls["json"].endswith("/exp.json") and urls["summary"].endswith("/exp_summary.json")
    with open_store(url, **options) as store:
        assert store.list() == ["exp.csv", "exp.json", "exp.pkl", "exp_summary.json"]

    doc = load_results_json(urls["json"], **options)
    assert list(doc) == ["timestamp", "num_experiments", "metadata", "results"]
    assert doc["num_experiments"] == 3 and doc["metadata"] == {"epochs": 10}
    assert doc["results"][1]["curve"] == [1.5, 2.0] and doc["results"][0]["seed"] == 1
    assert math.isnan(doc["results"][2]["acc"]) and doc["results"][2]["loss"] == math.inf

    exact = load_results_pickle(urls["pickle"], **options)
    assert exact["num_experiments"] == 3 and type(exact["results"][0]["seed"]) is np.int64

    rows = parse_csv(read(url, options, "exp.csv"))
    assert rows[0] == ["acc", "converged", "curve", "loss", "lr", "model", "seed"]
    assert rows[1] == ["0.91", "True", "", "", "0.1", "mlp", "1"]
    assert rows[2][2] == "[1.5, 2.0]" and rows[3][0] == "nan"

    stats = load_results_json(urls["summary"], **options)["statistics"]
    assert set(stats) == {"acc", "loss", "lr", "seed"}  # no bools, no strings, no arrays
    assert stats["acc"]["nan_count"] == 1 and stats["acc"]["count"] == 2


def test_file_urls_and_parquet(store_location: tuple[str, dict[str, Any]]) -> None:
    url, options = store_location
    written = export_results_json(ROWS[:1], f"{url}/tables/a.json", pretty=False, **options)
    assert written == f"{url}/tables/a.json"
    assert load_results_json(written, **options)["results"] == [{**ROWS[0], "seed": 1}]

    df = pd.DataFrame({"grid_size": [3, 5], "loss": [0.5, 0.25], "name": ["a", "b"]})
    df.attrs = {"epochs": np.int64(10), "device": "cpu", "threshold": None}
    ref = export_results_parquet(df, f"{url}/tables/df.parquet", **options)
    back = load_results_parquet(ref, **options)
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs == {"epochs": 10, "device": "cpu", "threshold": None}
    assert df.attrs["epochs"].dtype == np.int64  # the caller's frame is untouched


def test_failed_export_keeps_the_old_file(store_location: tuple[str, dict[str, Any]]) -> None:
    url, options = store_location
    export_all_formats(ROWS, url, "exp", **options)
    before = {k: read(url, options, k) for k in ("exp.json", "exp.csv", "exp.pkl", "exp_summary.json")}
    bad = [*ROWS, {"model": object()}]
    with pytest.raises(TypeError, match=r"results\[3\]\['model'\]"):
        export_all_formats(bad, url, "exp", **options)
    with pytest.raises(TypeError, match=r"results\[3\]\['model'\]"):
        export_results_csv(bad, f"{url}/exp.csv", **options)
    assert {k: read(url, options, k) for k in before} == before


# ---- the file layouts -----------------------------------------------------------------------------


def test_pretty_json_is_json_dumps_indent_2() -> None:
    url = f"memory://export-{uuid.uuid4().hex}/r.json"
    export_results_json(ROWS, url, metadata={"tags": ["a", "b"], "n": np.int32(3)})
    text = read(url.rpartition("/")[0], {}, "r.json").decode()
    doc = json.loads(text)
    assert text == json.dumps(doc | {"results": json.loads(json.dumps(ROWS, cls=NumpyEncoder))}, indent=2)
    assert '"acc": NaN' in text and '"loss": Infinity' in text


def test_numpy_encoder() -> None:
    value = {"i": np.uint8(7), "f": np.float16(0.5), "b": np.bool_(True), "a": np.arange(4).reshape(2, 2), "n": np.float32("nan")}
    assert json.dumps(value, cls=NumpyEncoder) == '{"i": 7, "f": 0.5, "b": true, "a": [[0, 1], [2, 3]], "n": NaN}'
    with pytest.raises(TypeError):
        json.dumps({"x": object()}, cls=NumpyEncoder)


def test_summary_statistics_layout(tmp_path: Any) -> None:
    rows = [{"x": 1, "flag": True, "s": "a", "y": None}, {"x": 2, "flag": False, "y": 4.0}, {"x": float("nan"), "mixed": 1}, {"mixed": "z"}]
    export_summary_statistics(rows, tmp_path / "summary.json")
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert list(doc) == ["timestamp", "num_experiments", "statistics"] and doc["num_experiments"] == 4
    assert set(doc["statistics"]) == {"x", "y"}
    x = doc["statistics"]["x"]
    assert x == {"mean": 1.5, "std": float(np.std([1, 2])), "min": 1.0, "max": 2.0, "median": 1.5, "count": 2, "nan_count": 1}
    assert doc["statistics"]["y"]["count"] == 1


def test_empty_results(tmp_path: Any) -> None:
    urls = export_all_formats([], tmp_path, "none")
    assert (tmp_path / "none.csv").read_bytes() == b""
    assert load_results_json(urls["json"])["num_experiments"] == 0
    assert load_results_json(urls["summary"])["statistics"] == {}


def test_split_location_and_store_key(tmp_path: Any) -> None:
    assert split_location("s3://b/dir/x.json") == ("s3://b/dir", "x.json")
    assert split_location("memory://x.json") == ("memory://", "x.json")
    assert split_location("runs/exp.h5/sub/x.csv") == ("runs/exp.h5/sub", "x.csv")
    assert split_location("x.csv") == (".", "x.csv")
    assert split_location("/x.csv") == ("/", "x.csv")
    with pytest.raises(ValueError, match="names a folder"):
        split_location("results/")
    store = open_store(tmp_path)
    assert export_results_csv(ROWS, store, filename="a.csv").endswith("/a.csv")
    assert not store._closed  # a Store passed in stays open
    with pytest.raises(TypeError, match="filename="):
        export_results_csv(ROWS, store)
    export_results_json(ROWS, tmp_path / "deep", filename="b.json")
    assert load_results_json(store, filename="deep/b.json")["num_experiments"] == 3


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"a": 1}, "list of dicts, got dict"),
        (pd.DataFrame({"a": [1]}), "got DataFrame.*export_results_parquet"),
        ([{"a": 1}, 5], r"results\[1\] is a int"),
        ("abc", "list of dicts, got str"),
    ],
)
def test_not_a_list_of_dicts(tmp_path: Any, bad: Any, message: str) -> None:
    (tmp_path / "r.json").write_text("old")
    for export in (export_results_json, export_results_csv, export_results_pickle, export_summary_statistics):
        with pytest.raises(TypeError, match=message):
            export(bad, tmp_path / "r.json")
    assert (tmp_path / "r.json").read_text() == "old"


def test_unserializable_value_names_row_and_key(tmp_path: Any) -> None:
    (tmp_path / "r.json").write_text("old")
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError, match=r"results\[1\]\['when'\].*datetime"):
        export_results_json([{"a": 1}, {"when": pd.Timestamp("2020-01-01").to_pydatetime()}], tmp_path / "r.json")
    with pytest.raises(ValueError, match=r"results\[0\]\['loop'\].*Circular"):
        export_results_json([{"loop": loop}], tmp_path / "r.json", pretty=False)
    with pytest.raises(TypeError, match=r"metadata\['fn'\]"):
        export_results_json([{"a": 1}], tmp_path / "r.json", metadata={"fn": print})
    with pytest.raises(TypeError, match=r"results\[0\]\['fn'\]"):
        export_results_pickle([{"fn": lambda: 1}], tmp_path / "r.json")
    with pytest.raises(TypeError, match=r"results\[1\] has the key 3"):
        export_results_csv([{"a": 1}, {3: 1}], tmp_path / "r.json")
    with pytest.raises(TypeError, match="metadata must be a dict"):
        export_results_json([], tmp_path / "r.json", metadata=[1])
    with pytest.raises(TypeError, match=r"results\[1\] has the key \(1, 2\)"):
        export_summary_statistics([{"a": 1}, {(1, 2): 0.5}], tmp_path / "r.json")
    with pytest.raises(TypeError, match=r"df.attrs\['fn'\]"):
        frame = pd.DataFrame({"a": [1]})
        frame.attrs["fn"] = print
        export_results_parquet(frame, tmp_path / "r.json")
    assert (tmp_path / "r.json").read_text() == "old"


def test_unwritable_destination(tmp_path: Any) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(StoreError, match="r.json"):
        export_results_json(ROWS, tmp_path / "file" / "r.json")
    assert (tmp_path / "file").read_text() == "a file, not a folder"
    with pytest.raises(TypeError, match="storage options"):
        export_results_json(ROWS, open_store(tmp_path), filename="r.json", endpoint_url="http://x")


# ---- round trips (hypothesis) --------------------------------------------------------------------

keys = st.text(min_size=1, max_size=8)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=6)
json_rows = st.lists(st.dictionaries(keys, json_values, max_size=5), max_size=6)


def same(a: Any, b: Any) -> bool:
    """Equality where nan equals nan."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@PROPS
@given(rows=json_rows, metadata=st.dictionaries(keys, json_values, max_size=3), pretty=st.booleans())
def test_json_round_trip(rows: list[dict[str, Any]], metadata: dict[str, Any], pretty: bool) -> None:
    url = f"memory://export-json-{uuid.uuid4().hex}/r.json"
    export_results_json(rows, url, metadata=metadata, pretty=pretty)
    doc = load_results_json(url)
    assert doc["num_experiments"] == len(rows)
    assert same(doc["results"], rows) and same(doc["metadata"], metadata)
    if pretty:
        text = read(url.rpartition("/")[0], {}, "r.json").decode()
        assert text == json.dumps(doc, indent=2)


def test_pretty_json_of_flat_rows_with_separator_lookalike_strings_is_json_dumps_indent_2() -> None:
    rows = [{"s": "},\n      {", "t": "}, {", "n": float("nan")}, {"s": "x", "i": 2**70, "b": None}]
    url = f"memory://export-json-{uuid.uuid4().hex}/r.json"
    export_results_json(rows, url)
    doc = load_results_json(url)
    assert read(url.rpartition("/")[0], {}, "r.json").decode() == json.dumps(doc, indent=2)
    assert doc["results"][0]["s"] == "},\n      {"


csv_cells = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)


@PROPS
@given(rows=st.lists(st.dictionaries(keys, csv_cells, max_size=5), min_size=1, max_size=6))
def test_csv_round_trip(tmp_path: Any, rows: list[dict[str, Any]]) -> None:
    path = tmp_path / "r.csv"
    export_results_csv(rows, path)
    table = parse_csv(path.read_bytes())
    header = sorted({k for row in rows for k in row})
    if not header:
        assert table == [[]] * (len(rows) + 1)
        return
    assert table[0] == header and len(table) == len(rows) + 1
    for row, cells in zip(rows, table[1:]):
        for key, cell in zip(header, cells):
            value = row.get(key)
            if value is None:
                assert cell == ""
            elif isinstance(value, float):
                assert same(float(cell), value)
            else:
                assert cell == str(value)


@PROPS
@given(rows=json_rows)
def test_pickle_round_trip_is_exact(rows: list[dict[str, Any]]) -> None:
    url = f"memory://export-pkl-{uuid.uuid4().hex}/r.pkl"
    export_results_pickle(rows, url, metadata={"k": 1})
    assert same(load_results_pickle(url)["results"], rows)
    assert pickle.loads(read(url.rpartition("/")[0], {}, "r.pkl"))["metadata"] == {"k": 1}


def test_store_argument_is_a_store(tmp_path: Any) -> None:
    store = open_store(tmp_path)
    assert isinstance(store, Store)
    export_results_parquet(pd.DataFrame({"a": [1]}), store, filename="t.parquet")
    assert load_results_parquet(store, filename="t.parquet")["a"].tolist() == [1]
