"""JSON of logged events: compact JSON lines that `json.loads` reads back to the logged values.

orjson encodes a whole batch of events in one call (``,`` / ``:`` separators, UTF-8, floats in
their shortest round-trip form). Two things it cannot write as the seed does go to the stdlib
encoder (same compact separators, UTF-8): an event holding a non-finite Python float (orjson
writes ``null``; the seed writes ``NaN`` / ``Infinity`` / ``-Infinity``, which `json.loads`
reads), and an event orjson refuses (ints over 64 bits, non-str keys, lone surrogates, cycles,
deep nesting). numpy scalars and arrays become Python numbers and lists (a non-finite numpy float
is written as its token directly), datetimes ISO strings, timedeltas seconds, paths strings, sets
sorted lists, enum members their value, UUIDs their text, anything else its `repr`: encoding
never fails.
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import os
import uuid
from collections.abc import Mapping
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

import numpy as np
import orjson

__all__ = ["encode_events", "stdlib_json", "to_json"]


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
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    if isinstance(obj, uuid.UUID):
        return str(obj)
    return repr(obj)


# json's C encoder built once (json.dumps builds one per call): compact separators, UTF-8 text,
# NaN/Infinity allowed, no cycle check (a cycle ends in RecursionError, and then `_plain` is used).
if c_make_encoder is not None:
    _c_encode = c_make_encoder(None, _default, encode_basestring, None, ":", ",", False, False, True)

    def _encode(value: Any) -> str:
        return "".join(_c_encode(value, 0))

else:  # Pythons without the accelerator
    _encode = json.JSONEncoder(default=_default, check_circular=False, ensure_ascii=False, separators=(",", ":")).encode


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
    """`value` as one line of compact JSON by the stdlib encoder (NaN / Infinity tokens); never raises."""
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
_NEWLINE = orjson.Fragment(b"\n")  # between the events of a batch; orjson escapes every newline inside a string
_TOKENS = {"nan": orjson.Fragment(b"NaN"), "inf": orjson.Fragment(b"Infinity"), "-inf": orjson.Fragment(b"-Infinity")}


def _non_finite(value: float) -> Any:
    """`value` if finite, else the seed's token for it (orjson would write null)."""
    return value if value - value == 0.0 else _TOKENS[repr(value)]


def _orjson_default(obj: Any) -> Any:
    """What the stdlib encoder writes for a value orjson passes through: subclasses as their base
    type, numpy values as Python numbers (non-finite floats as their tokens), the rest as `_default`."""
    if isinstance(obj, float):  # np.float64 and other float subclasses
        return _non_finite(float(obj))
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
        return _non_finite(value) if type(value) is float else value
    if isinstance(obj, np.ndarray) and (obj.dtype.kind != "f" or np.isfinite(obj).all()):
        return obj.tolist()
    return _tokens(_default(obj))


def _tokens(value: Any) -> Any:
    """`value` (what `_default` made of an array or a set) with its non-finite floats as their tokens."""
    if type(value) is float:
        return _non_finite(value)
    return [_tokens(v) for v in value] if type(value) is list else value


def _has_non_finite(value: Any, depth: int = 0) -> bool:
    """Whether `value` holds a Python float nan / ±inf (which orjson writes as null)."""
    if type(value) is float:
        return value - value != 0.0
    if depth < 64 and isinstance(value, (dict, list, tuple)):
        return any(_has_non_finite(v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return False


def _orjson_line(value: Any) -> bytes | None:
    """`value` as JSON by orjson; None when orjson refuses it or writes a non-finite float as null."""
    try:
        raw = orjson.dumps(value, default=_orjson_default, option=_OPTIONS)
    except orjson.JSONEncodeError:  # ints over 64 bits, non-str keys, lone surrogates, deep nesting...
        return None
    return None if b"null" in raw and _has_non_finite(value) else raw


def _line(value: Any) -> bytes:
    """`value` as one line of JSON (bytes, no newline); never raises."""
    raw = _orjson_line(value)
    return stdlib_json(value).encode("utf-8", "backslashreplace") if raw is None else raw


def to_json(value: Any) -> str:
    """`value` as one line of JSON (`json.loads` gives it back; nan/inf as NaN / Infinity); never raises."""
    return _line(value).decode("utf-8")


def encode_events(events: list[Any]) -> bytes:
    """The JSON lines of `events` (each followed by a newline), in one orjson call where the batch allows it."""
    if not events:
        return b""
    batch: list[Any] = [_NEWLINE] * (2 * len(events) - 1)
    batch[::2] = events
    try:
        raw = orjson.dumps(batch, default=_orjson_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return b"".join([_line(event) + b"\n" for event in events])
    text = raw[1:-1].replace(b",\n,", b"\n") + b"\n"  # a raw newline is only ever one of ours
    if b"null" not in raw:
        return text
    lines = text.split(b"\n")
    for i, line in enumerate(lines[:-1]):
        if b"null" in line and _has_non_finite(events[i]):
            lines[i] = stdlib_json(events[i]).encode("utf-8", "backslashreplace")
    return b"\n".join(lines)
