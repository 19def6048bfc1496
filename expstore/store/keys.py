"""Key rules shared by every backend: relative `/`-separated names that cannot leave the root."""

from __future__ import annotations

import functools

from ..errors import InvalidKey

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_SEGMENT_BYTES",
    "RESERVED_PREFIX",
    "validate_experiment_name",
    "validate_key",
    "validate_prefix",
]

MAX_KEY_BYTES = 1024  # S3's limit, applied everywhere so that a key valid on one store is valid on all
MAX_SEGMENT_BYTES = 255  # the usual file-name limit of local file systems
RESERVED_PREFIX = ".expstore-"  # temp and lock files of the local backend live under this name


def _bad_char(text: str) -> str | None:
    for ch in text:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"control character {ch!r}"
        if ch == "\\":
            return "backslash (use '/' to separate segments)"
    return None


def validate_key(key: object, url: str | None = None) -> str:
    """Return `key` if it is a valid store key, else raise `InvalidKey` saying which rule it breaks."""
    if not isinstance(key, str):
        raise InvalidKey(f"key must be a str, not {type(key).__name__}", url=url, key=repr(key))
    problem = _key_problem(key)
    if problem:
        raise InvalidKey(f"invalid key: {problem}", url=url, key=key)
    return key


@functools.lru_cache(maxsize=4096)  # a pure function of the key; stores check the same keys over and over
def _key_problem(key: str) -> str | None:
    if not key:
        return "empty key"
    if key.startswith("/"):
        return "absolute key (leading '/')"
    bad = _bad_char(key)
    if bad:
        return bad
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "not encodable as UTF-8"
    if size > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes"
    for segment in key.split("/"):
        if segment == "":
            return "empty segment ('//' or trailing '/')"
        if segment in (".", ".."):
            return f"'{segment}' segment"
        if segment.startswith(RESERVED_PREFIX):
            return f"segment starts with the reserved {RESERVED_PREFIX!r}"
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"segment longer than {MAX_SEGMENT_BYTES} bytes"
    return None


def validate_prefix(prefix: object, url: str | None = None) -> str:
    """Return a listing prefix: "" or a key start whose complete segments obey the key rules."""
    if not isinstance(prefix, str):
        raise InvalidKey(f"prefix must be a str, not {type(prefix).__name__}", url=url, key=repr(prefix))
    if prefix == "":
        return prefix
    head, _, tail = prefix.rpartition("/")
    problem = _key_problem(head) if head else ("absolute prefix (leading '/')" if prefix.startswith("/") else None)
    problem = problem or _bad_char(tail)
    if problem:
        raise InvalidKey(f"invalid prefix: {problem}", url=url, key=prefix)
    return prefix


def validate_experiment_name(name: object) -> str:
    """Return `name` if it can name an experiment (no separators, `..`, control chars, not empty), else `InvalidKey`."""
    if not isinstance(name, str):
        raise InvalidKey(f"experiment name must be a str, got {type(name).__name__} {name!r}")
    reason = None
    if not name or not name.strip():
        reason = "is empty"
    elif "/" in name or "\\" in name:
        reason = "contains a path separator"
    elif ".." in name:
        reason = "contains '..'"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        reason = "contains NUL or a control character"
    if reason:
        raise InvalidKey(f"invalid experiment name {name!r}: it {reason}")
    return name
