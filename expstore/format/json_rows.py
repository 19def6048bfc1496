"""`json.dumps` of flat result rows, byte for byte, column by column through Arrow's string kernels.

An export of 100,000 rows spends most of its time in Python's JSON encoder, formatting each float
with `repr` and escaping every key of every row. When the rows are dicts with the same keys in
the same order and each column holds one plain type, this module formats a whole column at once
(Arrow casts numbers to their shortest round-trip digits) and joins the columns into rows with
one kernel call. The text is exactly what `json.dumps` writes: a float whose Arrow text could
differ from `repr` (exponent notation, NaN, infinities) is formatted by `repr` itself.

Needs pyarrow (``expstore[pandas]``); without it, or for other rows, callers use `json`.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any

import numpy as np

__all__ = ["COMPACT", "PRETTY_RESULTS", "encode_flat_rows"]


@dataclass(frozen=True)
class RowLayout:
    """The punctuation `json.dumps` puts around a list of flat dicts (`row_open` + fields + `row_close`)."""

    list_open: str
    row_open: str
    field_sep: str
    key_sep: str
    row_close: str
    row_sep: str
    list_close: str


COMPACT = RowLayout("[", "{", ", ", ": ", "}", ", ", "]")
# The "results" list of the export document under ``indent=2``: the list at depth 1, rows at depth 2.
PRETTY_RESULTS = RowLayout("[\n    ", "{\n      ", ",\n      ", ": ", "\n    }", ",\n    ", "\n  ]")

# Python's repr writes a float in plain notation when 1e-4 <= |x| < 1e16 (and for 0). Arrow writes
# the same shortest digits, in plain notation too unless it picks an exponent; either way a plain
# Arrow text is repr's, less the ".0" repr adds to integral values.
_PLAIN_LOW, _PLAIN_HIGH = 1e-4, 1e16


def encode_flat_rows(rows: Sequence[Mapping[str, Any]], layout: RowLayout) -> list[bytes | memoryview] | None:
    """`rows` as `json.dumps` writes the list in `layout`: ASCII buffers to store back to back, or
    None when this fast path does not apply (no pyarrow, no rows, a row that is not a dict with the
    first row's str keys in its order, or a column whose values are not all one of int, float,
    str, bool, None)."""
    if _arrow() is None or not rows or type(rows[0]) is not dict or not rows[0]:
        return None
    _, pc = _arrow()
    keys = tuple(rows[0])
    if not all(type(k) is str for k in keys) or set(map(type, rows)) != {dict}:
        return None
    if not all(map(keys.__eq__, map(tuple, rows))):
        return None
    columns = []
    for key in keys:
        column = _encode_column(list(map(operator.itemgetter(key), rows)))
        if column is None:
            return None
        columns.append(column)
    parts: list[Any] = []
    for i, (key, column) in enumerate(zip(keys, columns)):
        before = layout.row_open if i == 0 else layout.field_sep
        parts += [_text(before + encode_basestring_ascii(key) + layout.key_sep), column]
    parts.append(_text(layout.row_close + layout.row_sep))
    joined = pc.binary_join_element_wise(*parts, _text(""))  # one string per row, back to back in one buffer
    offsets, data = joined.buffers()[1:]
    end = int(np.frombuffer(offsets, np.int64, count=len(joined) + 1, offset=joined.offset * 8)[-1])
    return [layout.list_open.encode(), memoryview(data)[: end - len(layout.row_sep)], layout.list_close.encode()]


@functools.cache
def _arrow() -> tuple[Any, Any] | None:
    """(pyarrow, pyarrow.compute), imported on first use (it takes a while), or None without them."""
    try:
        import pyarrow
        import pyarrow.compute
    except ImportError:  # the pandas extra is not installed
        return None
    return pyarrow, pyarrow.compute


def _encode_column(values: list[Any]) -> Any | None:
    """One column as a large_string Arrow array of JSON texts; None for a column of mixed or other types."""
    pa, pc = _arrow()
    kinds = set(map(type, values))
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    if kind is float:
        return _floats(values)
    if kind is int:
        try:
            return pc.cast(pa.array(np.array(values, dtype=np.int64)), pa.large_string())
        except OverflowError:  # beyond int64: left to the stdlib encoder, which also names an int it cannot write
            return None
    if kind is str:
        return pa.array(list(map(encode_basestring_ascii, values)), pa.large_string())
    if kind is bool:
        return pc.if_else(pa.array(values, pa.bool_()), _text("true"), _text("false"))
    if kind is type(None):
        return pa.array(["null"] * len(values), pa.large_string())
    return None


def _floats(values: list[float]) -> Any:
    pa, pc = _arrow()
    array = np.array(values, dtype=np.float64)
    texts = pc.cast(pa.array(array), pa.large_string())
    magnitude = np.abs(array)
    plain = ((magnitude >= _PLAIN_LOW) & (magnitude < _PLAIN_HIGH)) | (magnitude == 0)
    has_exponent = pc.match_substring(texts, "e").to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):  # nan has no integral part; it goes to repr anyway
        integral = plain & ~has_exponent & (array == np.trunc(array))
    if integral.any():  # repr writes 3.0 where Arrow writes 3
        texts = pc.if_else(pa.array(integral), pc.binary_join_element_wise(texts, _text(".0"), _text("")), texts)
    by_repr = np.flatnonzero(~plain | has_exponent)
    if len(by_repr):
        reprs = [_json_float(values[i]) for i in by_repr.tolist()]
        mask = np.zeros(len(values), dtype=bool)
        mask[by_repr] = True
        texts = pc.replace_with_mask(texts, pa.array(mask), pa.array(reprs, pa.large_string()))
    return texts


def _json_float(x: float) -> str:
    """What `json.dumps` writes for one float (allow_nan, as Python's default)."""
    if x != x:
        return "NaN"
    if x in (float("inf"), -float("inf")):
        return "Infinity" if x > 0 else "-Infinity"
    return float.__repr__(x)


def _text(s: str) -> Any:
    pa, _ = _arrow()
    return pa.scalar(s, pa.large_string())
