"""Locations of single values: a URL split into (store URL, key), and a store opened for one use.

Facades take "the URL of one file" (`s3://b/run/results.json`, `run.h5/exp_iter_000010.ckpt`) as
well as a folder URL or an open `Store`; these helpers are the one place that turns either into a
store and a key, and that closes what it opened, never a store the caller passed in.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from .base import Store
from .registry import open_store

__all__ = ["join_url", "opened_store", "split_url_at"]


def split_url_at(location: str | os.PathLike[str], segments: int = 1) -> tuple[str, str]:
    """Split the last `segments` path segments off a URL or path as the key:
    ``s3://b/dir/x.json`` -> (``s3://b/dir``, ``x.json``); ``memory://x.json`` -> (``memory://``, ``x.json``).
    The store part of a bare name is ``.``; `ValueError` when the location has no such segments."""
    text = os.fspath(location)
    if not isinstance(text, str):
        raise TypeError(f"a location must be a str or a path, not {type(text).__name__}")
    base, parts = text, []
    for _ in range(segments):
        base, _, name = base.rpartition("/")
        if not name:
            raise ValueError(f"{text!r} names a folder, not a value: give the value's name (…/results.json)")
        parts.insert(0, name)
    if base.endswith(":/") or (not base and text.startswith("/")):  # memory://x.json, /x.json
        base += "/"
    return base or ".", "/".join(parts)


def join_url(url: str, key: str) -> str:
    """The URL of `key` inside the store at `url`."""
    return url + key if url.endswith("/") else f"{url}/{key}"


@contextlib.contextmanager
def opened_store(location: Any, **storage_options: Any) -> Iterator[Store]:
    """The store at `location` (a URL, a path or an open `Store`) for the length of the block;
    closed afterwards only if this opened it."""
    store = open_store(location, **storage_options)
    try:
        yield store
    finally:
        if store is not location:
            store.close()
