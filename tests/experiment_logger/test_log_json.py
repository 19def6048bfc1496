"""The logger's JSON: whatever path encodes an event, `json.loads` reads back what the stdlib encoder would have written."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import logging
import math
import os
import uuid
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expstore import open_store
from expstore.experiment_logger import ExperimentLogger, load_structured_logs, load_text_log
from expstore.experiment_logger.json_lines import encode_events, stdlib_json, to_json
from expstore.experiment_logger.line_format import LineFormatter, format_pairs, human_text, metrics_texts


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


def canonical(text: str | bytes) -> str:
    """The values of a JSON text in one canonical spelling (so nan equals nan)."""
    return json.dumps(json.loads(text))


@settings(max_examples=400, deadline=None)
@given(st.one_of(values, events))
def test_one_value_reads_back_as_the_stdlib_values(value: Any) -> None:
    text = to_json(value)
    assert "\n" not in text
    assert canonical(text) == canonical(stdlib_json(value))


@settings(max_examples=120, deadline=None)
@given(st.lists(st.one_of(values, events), max_size=30))
def test_a_batch_is_one_line_per_event_reading_back_as_the_stdlib_values(batch: list[Any]) -> None:
    data = encode_events(batch)
    assert data.endswith(b"\n") or not batch
    lines = data.split(b"\n")[:-1]
    assert [canonical(line) for line in lines] == [canonical(stdlib_json(value)) for value in batch]


def test_non_finite_floats_keep_the_seed_tokens() -> None:
    """nan and ±inf are written NaN / Infinity / -Infinity (Python floats, numpy floats, in a batch or alone)."""
    data = {"step": None, "metrics": {"a": math.nan, "b": math.inf, "c": -math.inf, "d": np.float64(math.nan), "e": np.float32(-math.inf)}}
    expected = '{"step":null,"metrics":{"a":NaN,"b":Infinity,"c":-Infinity,"d":NaN,"e":-Infinity}}'
    assert to_json(data) == expected
    assert encode_events([{"x": 1}, data, {"y": None}]) == b'{"x":1}\n' + expected.encode() + b'\n{"y":null}\n'
    assert to_json([np.float64(math.inf), 1.5]) == "[Infinity,1.5]"  # numpy tokens need no fallback


def test_typical_events_are_orjson_lines() -> None:
    """Plain metrics events (floats, ints, a missing step, non-ASCII names) are orjson's bytes, one per line."""
    batch = [{"timestamp": "2025-01-02T03:04:05.000006+00:00", "event_type": "metrics",
              "data": {"step": step, "metrics": {"loss": 0.25, "lr": 1e-05, "énergie": 3, "tiny": 2.5e-07}}} for step in (7, None)]
    assert encode_events(batch) == b"".join(orjson.dumps(event) + b"\n" for event in batch)


def test_values_orjson_refuses_still_become_json() -> None:
    """Huge ints, int keys, lone surrogates, numpy arrays, enums and the like read back as the stdlib writes them."""
    for value in ({"n": 2**70, 3: "k"}, {"s": "\ud800"}, {"a": np.arange(3), "c": Color.RED, "u": uuid.UUID(int=5)}):
        assert canonical(to_json(value)) == canonical(stdlib_json(value))
        assert canonical(encode_events([value]).rstrip(b"\n")) == canonical(stdlib_json(value))
    assert json.loads(to_json({"s": "\ud800"})) == {"s": "\ud800"}


def reference_value(value: Any) -> str:
    """The documented `.log` form of one metric value: 4 decimals, scientific below 1e-3 or from 1e6 on (0 stays fixed)."""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e6 else f"{v:.4e}"
    return str(value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-3, 3)), scalars, max_size=5))
def test_log_pairs_follow_the_documented_form(metrics: dict[Any, Any]) -> None:
    assert format_pairs(metrics) == ", ".join(f"{k}={reference_value(v)}" for k, v in metrics.items())


floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e-3, 9.9999e-4, 1e6, 999999.99]))
packed_metrics = st.tuples(
    st.one_of(st.none(), st.integers(-5, 10**20), st.just("s")),
    st.sampled_from([("loss", "acc"), ("lr%s",), ("é", "loss", "x"), (1, "k"), ()]),
    st.integers(0, 3),
).flatmap(lambda t: st.tuples(st.just(t[1]), st.just(t[0]), *[
    floats if t[2] else st.one_of(floats, st.integers(-3, 3), st.just(np.float32(0.5)), st.none()) for _ in t[1]
]))


@settings(max_examples=150, deadline=None)
@given(st.lists(packed_metrics, max_size=40), st.integers(8, 30))
def test_metrics_lines_of_a_batch_are_each_events_line(mixed: list[Any], same: int) -> None:
    """The batched `.log` metrics messages (numpy-chosen templates) are the per-event messages."""
    batch = mixed + [(("loss", "acc"), step, 1.0 / (step + 1), 1e-5 * step) for step in range(same)] + mixed[:3]
    assert metrics_texts(batch) == [human_text("metrics", data, True) for data in batch]


def test_a_loop_of_metrics_reads_back_and_its_log_lines_keep_their_form() -> None:
    """Through the logger: many events of one loop, other names between them, a nan and a missing step."""
    memory_url = f"memory://log-json-{os.urandom(6).hex()}"
    with ExperimentLogger("loop", memory_url, log_to_console=False) as logger:
        for step in range(50):
            logger.log_metrics({"loss": 1.0 / (step + 1), "lr": 3e-5}, step=step)
            if step == 20:
                logger.log_metrics({"val_loss": math.nan, "loss": 7.0})
    events = [e for e in load_structured_logs(memory_url, "loop") if e["event_type"] == "metrics"]
    assert len(events) == 51 and events[21] == {**events[21], "data": {"step": None, "metrics": {"val_loss": events[21]["data"]["metrics"]["val_loss"], "loss": 7.0}}}
    assert math.isnan(events[21]["data"]["metrics"]["val_loss"]) and events[49]["data"] == {"step": 48, "metrics": {"loss": 1 / 49, "lr": 3e-5}}
    text = load_text_log(memory_url, "loop")
    assert "- INFO - Metrics (step 0): loss=1.0000, lr=3.0000e-05\n" in text
    assert "- INFO - Metrics: val_loss=nan, loss=7.0000\n" in text and "Metrics (step 49): loss=0.0200, lr=3.0000e-05\n" in text
    summary = json.loads(open_store(memory_url).read("loop_run.json"))
    assert summary["final_metrics"] == {"loss": 1 / 50, "lr": 3e-5, "val_loss": summary["final_metrics"]["val_loss"]}


@pytest.mark.parametrize("rank", [None, 3])
@pytest.mark.parametrize("spacing", [1e-6, 0.01])  # within one second, and across seconds
def test_a_batch_of_one_loops_events_formats_as_any_batch(rank: int | None, spacing: float) -> None:
    """A batch of one `log_metrics` loop (its own path) gives the lines the general path gives for it."""
    names = ("loss", "lr")
    loop = [(1.7e9 + 0.25 + i * spacing, logging.INFO, None, "metrics", (names, i if i % 3 else None, 1.0 / (i + 1), 3e-5), True)
            for i in range(300)]
    plain = (loop[-1][0], logging.INFO, None, None, None, "a plain line")  # makes the batch a general one
    jsonl, log, seen = LineFormatter("experiment.loop", rank).format_many(list(loop))
    general = LineFormatter("experiment.loop", rank).format_many([*loop, plain])
    assert jsonl == general[0] and log + log.splitlines(keepends=True)[-1].split(b" - INFO - ")[0] + b" - INFO - a plain line\n" == general[1]
    assert [s[4]["metrics"] for s in seen][-1] == [s[4]["metrics"] for s in general[2]][-1] == {"loss": 1 / 300, "lr": 3e-5}
