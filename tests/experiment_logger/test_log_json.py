"""The logger's JSON: orjson's fast path gives exactly the bytes of the stdlib encoder (the reference)."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import uuid
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from expstore.experiment_logger.json_lines import stdlib_json, to_json, to_json_many


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class Tagged(str):
    pass


class Config(dict):
    pass


@dataclasses.dataclass
class Point:
    x: float


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e-3, max_value=1e-3),  # where orjson's and repr's exponents differ
    st.text(max_size=12),
    st.sampled_from(["a:b", "x, y", "1e-7", "0.00001", "é", "\x7f", "\\", '"', "\n", "\ud800", "fine-tune", "NaN", "null", "[1]"]),
    st.builds(np.float32, st.floats(width=32)),
    st.builds(np.float64, st.floats()),
    st.builds(np.int64, st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    st.builds(np.uint64, st.integers(min_value=0, max_value=2**64 - 1)),
    st.builds(np.bool_, st.booleans()),
    st.sampled_from([Color.RED, uuid.UUID(int=5), datetime.date(2025, 1, 2), np.longdouble(0.5), np.complex64(1j), b"x"]),
    st.sampled_from([Level.HIGH, Tagged("t:1"), Tagged("t"), Config(a=1.5), Point(0.5), datetime.datetime(2025, 1, 2, 3, 4, 5, 6)]),
    st.builds(np.float64, st.sampled_from([math.nan, math.inf, -math.inf, 1e-05, 2.5e-07])),
    st.builds(lambda xs: np.array(xs, dtype=np.float32), st.lists(st.floats(width=32), max_size=4)),
    st.builds(lambda xs: np.array(xs), st.lists(st.integers(min_value=-9, max_value=9), max_size=4)),
)
keys = st.one_of(st.text(max_size=8), st.sampled_from(["loss", "a:b", "k,", "e-5"]), st.integers(-3, 3))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
events = st.fixed_dictionaries({"step": st.one_of(st.none(), st.integers(0, 10**6), st.just(math.nan)), "metrics": st.dictionaries(keys, values, max_size=5)})


@settings(max_examples=600, deadline=None)
@given(st.one_of(values, events))
def test_one_value_is_the_stdlib_bytes(value: Any) -> None:
    assert to_json(value) == stdlib_json(value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(values, events), max_size=30))
def test_a_batch_is_the_stdlib_bytes(batch: list[Any]) -> None:
    assert to_json_many(batch) == [stdlib_json(value) for value in batch]


def test_the_fast_path_keeps_the_stdlib_forms() -> None:
    """Spot checks of what the stdlib encoder writes: NaN/Infinity, repr's exponents, ASCII escapes, spaced separators."""
    data = {"step": None, "metrics": {"loss": math.nan, "up": math.inf, "lr": 1e-05, "tiny": 2.5e-07, "big": 1e16}}
    assert to_json(data) == (
        '{"step": null, "metrics": {"loss": NaN, "up": Infinity, "lr": 1e-05, "tiny": 2.5e-07, "big": 1e+16}}'
    )
    assert to_json_many([{"é": [1, 2.5]}, {"a": np.float32(0.1)}]) == ['{"\\u00e9": [1, 2.5]}', '{"a": 0.10000000149011612}']
    assert to_json({"c": Color.RED, "u": uuid.UUID(int=5)}) == stdlib_json({"c": Color.RED, "u": uuid.UUID(int=5)})


def test_typical_metrics_events_take_the_orjson_path() -> None:
    """Small learning rates, numpy scalars, a missing step and string keys with digits stay on the fast path."""
    from expstore.experiment_logger.json_lines import orjson_text

    for event in (
        {"step": 7, "metrics": {"loss": 0.25, "lr": 1e-05, "grad": 3.3e-07, "acc": np.float32(0.5), "n": np.int64(3)}},
        {"step": None, "metrics": {"loss": 1.5e-05, "epoch_2": 2}},
    ):
        assert orjson_text(event) == stdlib_json(event)
    assert orjson_text({"step": None, "metrics": {"loss": math.nan}}) is None  # left to the stdlib encoder
