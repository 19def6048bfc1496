"""The one skeleton walk and the one dtype description of `expstore.format.tree`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from expstore.format.tree import dtype_description, dtype_from_description, flatten, walk_skeleton


def test_walk_visits_every_node_in_tree_order_with_its_keys() -> None:
    skeleton, _ = flatten({"a": [np.zeros(2), 1], "b": {"c": None}, "d": ()})
    visited = [(node["t"], keys) for node, keys in walk_skeleton(skeleton)]
    assert visited == [
        ("dict", ()),
        ("list", ("a",)),
        ("array", ("a", 0)),
        ("int", ("a", 1)),
        ("dict", ("b",)),
        ("none", ("b", "c")),
        ("tuple", ("d",)),
    ]


@pytest.mark.parametrize(
    "skeleton",
    [
        [],
        {"t": 3},
        {"t": "dict", "items": "nope"},
        {"t": "dict", "items": [["k"]]},
        {"t": "dict", "items": [[True, {"t": "none"}]]},
        {"t": "dict", "items": [[1.5, {"t": "none"}]]},
        {"t": "list", "items": {"t": "none"}},
        {"t": "list", "items": [{"t": "none"}, "leaf"]},
    ],
)
def test_walk_refuses_a_malformed_skeleton_with_value_error(skeleton: object) -> None:
    with pytest.raises(ValueError, match="skeleton"):
        list(walk_skeleton(skeleton))


@pytest.mark.parametrize(
    "dtype",
    [
        np.dtype("<f8"),
        np.dtype(">i4"),
        np.dtype("<U5"),
        np.dtype("<M8[ns]"),
        np.dtype([("x", "<f4"), ("y", ">i8", (2, 3))]),
        np.dtype([("outer", [("inner", "<u2"), ("z", "|b1")]), ("w", "<c16")]),
        np.dtype({"names": ["a"], "formats": ["<i2"], "titles": ["the a"]}),
        np.dtype({"names": ["a", "b"], "formats": ["<i2", "<f8"], "offsets": [0, 8], "itemsize": 24}),
    ],
)
def test_dtype_description_survives_json(dtype: np.dtype) -> None:
    back = dtype_from_description(json.loads(json.dumps(dtype_description(dtype))))
    assert back == dtype and back.str == dtype.str and back.itemsize == dtype.itemsize


@pytest.mark.parametrize("description", [None, 5, {"a": 1}, [["x"]], [["x", "<f8", [2], "extra"]], ["<f8"]])
def test_a_malformed_dtype_description_raises_value_error(description: object) -> None:
    with pytest.raises(ValueError):
        dtype_from_description(description)
