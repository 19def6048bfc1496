"""JSON of logged events: the bytes `json.dumps` writes, produced by orjson wherever it can give them.

The stdlib encoder is the reference (``", "`` / ``": "`` separators, ASCII with ``\\uXXXX``
escapes, ``NaN`` / ``Infinity``, numpy values as Python numbers and lists, `repr` for the rest).
orjson is several times faster but writes compact separators, UTF-8, ``null`` for nan/inf and
shorter exponents (``1e-7``, ``0.00001``), and turns enums and UUIDs into their values. `to_json`
therefore uses orjson only for values made of plain types and finite floats whose output it can
respace exactly, and the stdlib encoder for everything else; both give the same bytes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

import numpy as np
import orjson


def _default(obj: Any) -> Any:
    """JSON stand-ins for values `json` does not know."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, _dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    return repr(obj)


# json's C encoder built once (json.dumps builds one per call): NaN/Infinity allowed, no cycle check
# (a cycle ends in RecursionError, and `to_json` then falls back to `_plain`).
if c_make_encoder is not None:
    _c_encode = c_make_encoder(None, _default, encode_basestring_ascii, None, ": ", ", ", False, False, True)

    def _encode(value: Any) -> str:
        return "".join(_c_encode(value, 0))

else:  # Pythons without the accelerator
    _encode = json.JSONEncoder(default=_default, check_circular=False).encode


def _plain(value: Any, depth: int = 0) -> Any:
    """A copy JSON can always encode: str keys, no cycles (deep nesting cut at 64 levels)."""
    if depth > 64:
        return repr(value)
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else str(k): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    try:
        _encode(value)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


def stdlib_json(value: Any) -> str:
    """`value` as one line of JSON by the stdlib encoder (the reference output); never raises."""
    try:
        return _encode(value)
    except (TypeError, ValueError, RecursionError):  # tuple keys, cycles, a __repr__ that fails...
        try:
            return _encode(_plain(value))
        except Exception as exc:  # noqa: BLE001 - a log line must never stop the flusher
            return _encode(f"<unencodable {type(value).__name__}: {exc}>")


# ---- the orjson path ------------------------------------------------------------------------------

_SCALARS = (int, bool, type(None))
_NUMPY = (np.generic, np.ndarray)


def _clean(text: str) -> bool:
    """True when `_json_spacing` leaves a string's encoding as it is (it holds no separator)."""
    return not (":" in text or "," in text)


def _same_float(x: float) -> bool:
    """True when orjson writes `x` as `repr` does: finite (orjson writes null for nan/inf), and not below 1e-4
    in magnitude (orjson writes ``0.00001`` and ``1e-7`` where repr writes ``1e-05`` and ``1e-07``)."""
    return x - x == 0.0 and not (-1e-4 < x < 1e-4 and x)


def _orjson_safe(value: Any) -> bool:
    """True when orjson writes `value` as json does up to `_json_spacing`: plain containers, numpy values, clean strings."""
    kind = type(value)
    if kind is dict or kind is list or kind is tuple:
        if kind is dict:
            if not _clean("".join(value)):  # a non-str key raises TypeError: the stdlib path
                return False
            value = value.values()
        for item in value:
            kind = type(item)
            if kind is float:
                if not (item - item == 0.0 and (item >= 1e-4 or item <= -1e-4 or not item)):  # `_same_float`, inline
                    return False
            elif kind is str:
                if not _clean(item):
                    return False
            elif kind is not int and item is not None and not _orjson_safe(item):
                return False
        return True
    if kind is float:
        return _same_float(value)
    if kind is str:
        return _clean(value)
    return kind in _SCALARS or isinstance(value, _NUMPY)


def _numpy_default(obj: Any) -> Any:
    """orjson's `default`: numpy scalars and numeric arrays as the stdlib path writes them, when orjson's bytes match."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biu":
            return obj.tolist()
        if obj.dtype.kind == "f" and obj.dtype.itemsize <= 8 and all(map(_same_float, obj.ravel().tolist())):
            return obj.tolist()
    elif isinstance(obj, np.generic):
        value = obj.item()
        kind = type(value)
        if kind is int or kind is bool or (kind is float and _same_float(value)):
            return value
    raise TypeError("left to the stdlib encoder")  # orjson raises JSONEncodeError (a TypeError)


def _json_spacing(text: str) -> str:
    """orjson's compact output with json's ``", "`` and ``": "`` separators (its strings hold none)."""
    return text.replace(",", ", ").replace(":", ": ")


def _ascii(text: str) -> bool:
    """True when json's ASCII escaping leaves `text` as it is (orjson writes UTF-8 and its own escapes)."""
    return text.isascii() and "\\" not in text and "\x7f" not in text


def _checked(value: Any) -> bool:
    """`_orjson_safe(value)`, False where it raises (a non-str key, deep nesting)."""
    try:
        return _orjson_safe(value)
    except (TypeError, RecursionError):
        return False


def _orjson_bytes(value: Any) -> bytes | None:
    """orjson's encoding of `value` when it equals json's up to `_json_spacing`, else None."""
    try:
        return orjson.dumps(value, default=_numpy_default) if _checked(value) else None
    except TypeError:  # a 64-bit overflow...
        return None


def to_json(value: Any) -> str:
    """`value` as one line of JSON, byte for byte `stdlib_json(value)`; never raises."""
    out = _orjson_bytes(value)
    if out is not None and _ascii(text := out.decode()):
        return _json_spacing(text)
    return stdlib_json(value)


_NEWLINE = orjson.Fragment(b"\n")  # between the values of one batch; orjson escapes every newline in a string


def to_json_many(values: list[Any]) -> list[str]:
    """``[to_json(v) for v in values]``, in one orjson call (each call costs more than a small value's encoding)."""
    safe = [_checked(value) for value in values]
    batch: list[Any] = [_NEWLINE] * (2 * len(values) - 1)
    batch[::2] = [value if ok else None for value, ok in zip(values, safe)]
    try:
        text = orjson.dumps(batch, default=_numpy_default).decode()
    except TypeError:  # a 64-bit overflow...: one value at a time
        return [to_json(value) for value in values]
    if not _ascii(text):
        return [to_json(value) for value in values]
    texts = _json_spacing(text[1:-1]).split(", \n, ")
    return [text if ok else stdlib_json(value) for value, ok, text in zip(values, safe, texts)]
