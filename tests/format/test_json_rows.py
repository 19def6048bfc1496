"""Column-wise JSON of flat rows: byte for byte what `json.dumps` writes, or no answer at all."""

from __future__ import annotations

import json
import random
import re
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expstore.data_export import NumpyEncoder, export_results_json

json_rows = pytest.importorskip("expstore.format.json_rows")
pytest.importorskip("pyarrow")

COLUMN_TYPES = {
    "float": st.floats(),
    "int": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "str": st.text(max_size=12),
    "bool": st.booleans(),
    "none": st.none(),
}


def text(parts: list[Any]) -> str:
    return b"".join(parts).decode("ascii")


def pretty_results(rows: list[dict[str, Any]]) -> str:
    """The "results" list as it sits in an indent=2 export document (depth 1)."""
    return json.dumps({"results": rows}, indent=2)[len('{\n  "results": ') : -len("\n}")]


@st.composite
def uniform_rows(draw: Any) -> list[dict[str, Any]]:
    keys = draw(st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=5, unique=True))
    kinds = [draw(st.sampled_from(sorted(COLUMN_TYPES))) for _ in keys]
    n = draw(st.integers(min_value=1, max_value=20))
    return [{k: draw(COLUMN_TYPES[kind]) for k, kind in zip(keys, kinds)} for _ in range(n)]


@settings(max_examples=300, deadline=None)
@given(rows=uniform_rows())
def test_uniform_rows_are_encoded_exactly_as_json_dumps(rows: list[dict[str, Any]]) -> None:
    compact = json_rows.encode_flat_rows(rows, json_rows.COMPACT)
    pretty = json_rows.encode_flat_rows(rows, json_rows.PRETTY_RESULTS)
    assert compact is not None and pretty is not None  # the fast path took these rows
    assert text(compact) == json.dumps(rows)
    assert text(pretty) == pretty_results(rows)


def test_every_float_shape_matches_repr() -> None:
    rng = random.Random(7)
    values = [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(50_000)]
    values += [rng.random() * 10.0 ** rng.randint(-9, 22) for _ in range(50_000)]
    values += [float(rng.randint(-(10**17), 10**17)) for _ in range(10_000)]
    edges = [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e16, 9999999999999998.0, 5e-324, 1e22, 2.0**53, 1e10, 1.5e10]
    values += edges + [float("nan"), float("inf"), -float("inf")]
    rows = [{"x": v} for v in values]
    assert text(json_rows.encode_flat_rows(rows, json_rows.COMPACT)) == json.dumps(rows)


@pytest.mark.parametrize(
    "rows",
    [
        [{"a": 1, "b": 2}, {"b": 2, "a": 1}],  # same keys, another order
        [{"a": 1}, {"a": 1.5}],  # int and float in one column
        [{"a": 1}, {"a": None}],  # a missing value
        [{"a": True}, {"a": 1}],  # bool is not an int here
        [{"a": [1, 2]}],  # a container
        [{"a": 1}, {"a": 1, "b": 2}],  # a row with more keys
        [{"a": 1}, {"b": 1}],  # another key
        [{1: "a"}],  # a key that is not a str
        [{"a": 1}, {"a": 2**64}],  # an int beyond int64
    ],
)
def test_other_rows_are_left_to_json(rows: list[dict[Any, Any]]) -> None:
    assert json_rows.encode_flat_rows(rows, json_rows.COMPACT) is None


def test_an_int_json_cannot_write_is_named_with_its_row_and_key(tmp_path: Any) -> None:
    rows = [{"a": 1}, {"a": 10**5000}]  # more digits than Python converts to text by default
    with pytest.raises(ValueError, match=r"results\[1\]\['a'\]"):
        export_results_json(rows, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_numpy_values_are_left_to_the_numpy_encoder(tmp_path: Any) -> None:
    np = pytest.importorskip("numpy")
    rows = [{"x": np.float32(0.1), "i": np.int64(3)}, {"x": np.float32(2.5), "i": np.int64(4)}]
    assert json_rows.encode_flat_rows(rows, json_rows.COMPACT) is None
    export_results_json(rows, tmp_path / "r.json", pretty=False)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["results"] == json.loads(json.dumps(rows, cls=NumpyEncoder))


@pytest.mark.parametrize("pretty", [True, False])
def test_export_document_of_uniform_rows_is_json_dumps(tmp_path: Any, pretty: bool) -> None:
    rows = [{"run": i, "acc": i / 7, "lr": 1e-5, "model": "kan\u00e9", "ok": i % 2 == 0, "nan": float("nan")} for i in range(50)]
    export_results_json(rows, tmp_path / "r.json", metadata={"note": [1, 2]}, pretty=pretty)
    text = (tmp_path / "r.json").read_text()
    doc = json.loads(text)
    assert doc["num_experiments"] == 50
    assert text == json.dumps(doc, indent=2 if pretty else None, cls=NumpyEncoder)


def test_without_pyarrow_the_export_is_the_same(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [{"run": i, "acc": i / 3, "model": "mlp", "lr": 1e-5} for i in range(20)]
    export_results_json(rows, tmp_path / "fast.json")
    monkeypatch.setattr(json_rows, "_arrow", lambda: None)
    assert json_rows.encode_flat_rows(rows, json_rows.PRETTY_RESULTS) is None
    export_results_json(rows, tmp_path / "plain.json")

    def without_timestamp(name: str) -> str:
        return re.sub(r'"timestamp": "[^"]*"', '"timestamp": ""', (tmp_path / name).read_text(), count=1)

    assert without_timestamp("fast.json") == without_timestamp("plain.json")
