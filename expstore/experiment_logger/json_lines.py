"""JSON of logged events: the bytes `json.dumps` writes, produced by orjson wherever it can give them.

The stdlib encoder is the reference (``", "`` / ``": "`` separators, ASCII with ``\\uXXXX``
escapes, ``NaN`` / ``Infinity``, numpy values as Python numbers and lists, `repr` for the rest).
orjson is several times faster but writes compact separators, UTF-8, ``null`` for nan/inf and
shorter exponents (``1e-7``, ``0.00001``). `to_json_many` encodes a whole batch with orjson in one
call and then checks and mends its text (separators respaced, exponents rewritten as `repr` writes
them) where that is exact; a value whose text it cannot vouch for (non-ASCII, escapes, a ``null``
that might be a nan, a separator inside a string, ints over 64 bits...) goes to the stdlib encoder.
Enum members are written as their value and UUIDs as their text, on both paths.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import os
import re
import uuid
from collections.abc import Mapping
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

import numpy as np
import orjson

__all__ = ["orjson_text", "stdlib_json", "to_json", "to_json_many"]


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
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, uuid.UUID):
        return str(obj)
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

# Types orjson would write in its own way (dataclasses, datetimes, subclasses of str/int/float/dict/list)
# go to `_orjson_default` instead, which hands orjson what the stdlib encoder would write.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
_NEWLINE = orjson.Fragment(b"\n")  # between the values of one batch; orjson escapes every newline in a string
_NON_FINITE = orjson.Fragment(b"NaN")  # marks a nan/inf that orjson would write as null: the value falls back
_ONE_DIGIT_EXPONENT = re.compile(r"e-\d(?!\d)")  # orjson's 1e-7, repr's 1e-07
_DIGITS = "0123456789"


def _orjson_default(obj: Any) -> Any:
    """What the stdlib encoder writes for a value orjson passes through: subclasses as their base
    type, numpy values as Python numbers, the rest as `_default` makes them; a non-finite float as
    a marker that makes the value fall back (orjson would write it as null)."""
    if isinstance(obj, float):  # np.float64 and other float subclasses
        value = float(obj)
        return value if value - value == 0.0 else _NON_FINITE
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, int) and not isinstance(obj, enum.Enum):
        return int(obj)
    if isinstance(obj, dict):
        return dict(obj.items())
    if isinstance(obj, (list, tuple)):
        return list(obj)
    if isinstance(obj, np.generic):
        value = obj.item()
        return value if type(value) is not float or value - value == 0.0 else _NON_FINITE
    return _default(obj)


def _respaced(text: str) -> str | None:
    """orjson's text of a batch (or one value) as the stdlib encoder writes it, None when that is not
    certain: no backslash (so every quote delimits a string), ASCII, no DEL, and no string holding a
    separator or a number form that the mending below would touch."""
    if not text.isascii() or "\\" in text or "\x7f" in text:
        return None
    inside = "\"".join(text.split("\"")[1::2])
    if "," in inside or ":" in inside or "0.0000" in inside or _ONE_DIGIT_EXPONENT.search(inside):
        return None
    text = text.replace(",", ", ").replace(":", ": ")
    if "0.0000" in text:
        text = _exponent_05(text)
    if "e-" in text:
        text = _two_digit_exponents(text)
    return text


def _exponent_05(text: str) -> str:
    """orjson writes numbers in [1e-5, 1e-4) as ``0.0000123``, repr as ``1.23e-05`` (str operations,
    not a regex: `re.sub` expands each match in Python, several µs apiece)."""
    pieces = text.split("0.0000")
    out = [pieces[0]]
    for piece in pieces[1:]:
        rest = piece.lstrip(_DIGITS)
        digits = piece[: len(piece) - len(rest)]
        before = out[-1][-1:]  # the text before this "0.0000" ends as its piece did
        if not digits or digits[0] == "0" or before.isdigit() or before == ".":
            out.append("0.0000" + piece)  # part of a larger number (10.00001), not orjson's form
        else:
            out.append(f"{digits[0]}.{digits[1:]}e-05{rest}" if len(digits) > 1 else f"{digits}e-05{rest}")
    return "".join(out)


def _two_digit_exponents(text: str) -> str:
    """orjson writes ``1e-7``, repr ``1e-07``: pad one-digit negative exponents."""
    pieces = text.split("e-")
    return pieces[0] + "".join(
        ("e-0" if piece[:1].isdigit() and not piece[1:2].isdigit() else "e-") + piece for piece in pieces[1:]
    )


def orjson_text(value: Any) -> str | None:
    """`value` as the stdlib encoder writes it, through orjson; None when orjson cannot vouch for it."""
    try:
        raw = orjson.dumps(value, default=_orjson_default, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:  # ints over 64 bits, non-str keys, deep nesting, a failing default
        return None
    if "NaN" in raw or ("null" in raw and not _only_a_missing_step(value, raw)):
        return None  # a nan/inf, marked or written as null: the stdlib encoder writes NaN / Infinity
    return _respaced(raw)


def _only_a_missing_step(value: Any, raw: str) -> bool:
    """True when the one null in `raw` is the `None` step of a `log_metrics` event (the common null)."""
    return raw.startswith('{"step":null,') and raw.count("null") == 1 and type(value) is dict and value.get("step", 0) is None


def to_json(value: Any) -> str:
    """`value` as one line of JSON, byte for byte `stdlib_json(value)`; never raises."""
    text = orjson_text(value)
    return stdlib_json(value) if text is None else text


def to_json_many(values: list[Any]) -> list[str]:
    """``[to_json(v) for v in values]``, in one orjson call where the batch allows it (each call costs
    more than a small value's encoding)."""
    if not values:
        return []
    batch: list[Any] = [_NEWLINE] * (2 * len(values) - 1)
    batch[::2] = values
    try:
        raw = orjson.dumps(batch, default=_orjson_default, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return [to_json(value) for value in values]
    text = _respaced(raw[1:-1])
    if text is None or "NaN" in raw:
        return [to_json(value) for value in values]
    texts = text.split(", \n, ")
    if "null" in raw:
        return [to_json(value) if "null" in t else t for value, t in zip(values, texts)]
    return texts
