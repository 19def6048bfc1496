"""Property tests: key validation is the same everywhere and never lets a key leave the root."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expstore import InvalidKey, open_store
from expstore.store.keys import validate_key

SEGMENT_CHARS = st.characters(codec="utf-8", exclude_characters="/")
segments = st.one_of(st.text(SEGMENT_CHARS, min_size=0, max_size=12), st.sampled_from([".", "..", "", ".expstore-x"]))
keys = st.one_of(st.lists(segments, min_size=1, max_size=5).map("/".join), st.text(max_size=30))


def _is_valid(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidKey:
        return False
    return True


@given(keys)
def test_a_valid_key_has_only_plain_segments(key):
    if _is_valid(key):
        parts = key.split("/")
        assert all(p not in ("", ".", "..") for p in parts)
        assert not any(ord(c) < 32 or c in "\x7f\\" for c in key)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=keys, data=st.binary(max_size=64))
def test_local_store_keeps_valid_keys_inside_the_root_and_rejects_the_rest(key, data):
    with tempfile.TemporaryDirectory() as outside:
        root = Path(outside) / "root"
        store = open_store(root)
        if not _is_valid(key):
            try:
                store.write(key, data)
            except InvalidKey:
                pass
            else:
                raise AssertionError(f"{key!r} was accepted")
            assert not root.exists() or store.list() == []
            return
        store.write(key, data)
        assert store.read(key) == data
        assert store.list() == [key]
        written = [Path(d, f) for d, _, files in os.walk(outside) for f in files if not f.startswith(".expstore-")]
        assert [p.resolve().relative_to(root.resolve()).as_posix() for p in written] == [key]


@settings(max_examples=200)
@given(entries=st.dictionaries(st.lists(st.text("abc.-_", min_size=1, max_size=3), min_size=1, max_size=3).map("/".join).filter(_is_valid), st.binary(max_size=100), max_size=8))
def test_memory_store_round_trips_and_lists_sorted(entries):
    store = open_store(f"memory://prop-{uuid.uuid4().hex}")
    written = {}
    for key, value in entries.items():
        # keys that are a folder of another key cannot both exist on a file system; keep them out here
        if any(other.startswith(key + "/") or key.startswith(other + "/") for other in written):
            continue
        store.write(key, value)
        written[key] = value
    assert store.list() == sorted(written)
    for key, value in written.items():
        assert store.read(key) == value
        assert store.read_range(key, 1, 3) == value[1:3]
