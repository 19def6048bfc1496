"""The bytes-level Store protocol, run unchanged on every backend (see BACKENDS in conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from expstore import InvalidKey, KeyNotFound, PreconditionFailed, StoreError

MiB = 2**20


@pytest.mark.parametrize("size", [0, 1, 1000, 64 * MiB], ids=["empty", "1B", "1kB", "64MiB"])
def test_round_trip(store, size):
    data = os.urandom(size)
    store.write("values/v", data)
    assert store.read("values/v") == data
    assert store.size("values/v") == size
    buffer = store.read_buffer("values/v")
    assert buffer.dtype == np.uint8 and buffer.flags.writeable and buffer.tobytes() == data
    if size:
        buffer[0] ^= 0xFF  # the caller owns it: changing it changes nothing stored
        assert store.read("values/v") == data


def test_local_path_is_the_file_of_the_value_or_none(store):
    store.write("d/v", b"abc")
    path = store.local_path("d/v")
    assert path is None or Path(path).read_bytes() == b"abc"
    assert (path is not None) == (type(store).__name__ == "LocalStore")  # memory-mapped checkpoint loads


def test_read_buffer_of_a_missing_key_names_it(store):
    with pytest.raises(KeyNotFound, match="'nothing/here'"):
        store.read_buffer("nothing/here")


def test_a_64_mib_value_round_trips(store):
    data = np.random.default_rng(1).integers(0, 256, 64 * MiB + 4097, dtype=np.uint8).tobytes()
    store.write("big", data)
    assert store.size("big") == len(data)
    assert store.read("big") == data


def test_a_value_in_parts_round_trips_across_multipart_pieces(store, monkeypatch):
    """Parts of uneven sizes (one empty) whose boundaries fall inside and across S3's upload pieces."""
    s3 = pytest.importorskip("expstore.backends.s3")
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 6 * MiB)  # so S3 uploads these 9 MiB in two pieces
    monkeypatch.setattr(s3, "PART_SIZE", 5 * MiB)  # S3's smallest piece but the last
    rng = np.random.default_rng(2)
    sizes = [3 * MiB + 1, 0, 4 * MiB + 7, 1, 2 * MiB - 3]
    parts = [rng.integers(0, 256, n, dtype=np.uint8) for n in sizes]
    store.write("parts", parts)
    assert store.read("parts") == b"".join(p.tobytes() for p in parts)


def test_accepts_any_contiguous_buffer(store):
    array = np.arange(1000, dtype=np.float64)
    store.write("array", array)
    assert np.frombuffer(store.read("array"), dtype=np.float64).tolist() == array.tolist()
    store.write("ba", bytearray(b"abc"))
    store.write("mv", memoryview(b"xyz"))
    assert (store.read("ba"), store.read("mv")) == (b"abc", b"xyz")


def test_rejects_values_that_are_not_bytes(store):
    with pytest.raises(TypeError, match="'k'"):
        store.write("k", "text is not bytes")
    with pytest.raises(TypeError, match="contiguous"):
        store.write("k", np.arange(10)[::2])
    assert store.list() == []


def test_read_range_edges(store):
    data = bytes(range(256)) * 4
    n = len(data)
    store.write("r", data)
    cases = [(0, 0), (0, 1), (0, n), (n - 1, n), (10, 20), (0, n + 100), (n - 5, None), (n, n + 5), (n + 5, None), (3, None)]
    for start, end in cases:
        assert store.read_range("r", start, end) == data[start:end], (start, end)


def test_read_range_rejects_bad_bounds_and_missing_keys(store):
    store.write("r", b"0123456789")
    with pytest.raises(ValueError, match="start"):
        store.read_range("r", -1, 5)
    with pytest.raises(ValueError, match="end"):
        store.read_range("r", 5, 2)
    with pytest.raises(KeyNotFound):
        store.read_range("missing", 0, 1)
    with pytest.raises(KeyNotFound):
        store.read_range("missing", 0, 0)


def test_list_is_sorted_and_filters_by_string_prefix(store):
    keys = ["x/2/3", "y/z", "x0", "x/1", "xy", "a b/ü"]
    for key in keys:
        store.write(key, key.encode())
    assert store.list() == sorted(keys)
    assert store.list("x") == ["x/1", "x/2/3", "x0", "xy"]
    assert store.list("x/") == ["x/1", "x/2/3"]
    assert store.list("x/2") == ["x/2/3"]
    assert store.list("nothing") == []


def test_empty_store_lists_nothing_and_reads_raise(store):
    assert store.list() == []
    assert not store.exists("k")
    with pytest.raises(KeyNotFound):
        store.read("k")


def test_overwrite_replaces_value_and_version(store):
    first = store.write("k", b"first value")
    second = store.write("k", b"second")
    assert store.read("k") == b"second"
    assert first != second
    assert store.version("k") == second


def test_delete(store):
    store.write("d/1", b"1")
    store.write("d/2", b"2")
    store.delete("d/1")
    assert not store.exists("d/1")
    assert store.list() == ["d/2"]
    with pytest.raises(KeyNotFound):
        store.read("d/1")
    with pytest.raises(KeyNotFound):
        store.delete("d/1")


def test_exists_and_size(store):
    store.write("dir/k", b"12345")
    assert store.exists("dir/k")
    assert not store.exists("dir")  # a prefix of keys holds no value
    assert not store.exists("dir/other")
    assert store.size("dir/k") == 5
    with pytest.raises(KeyNotFound):
        store.size("dir/other")


def test_reopened_store_sees_data(store, reopen):
    store.write("persisted/k", b"still here")
    again = reopen()
    assert again.read("persisted/k") == b"still here"
    assert again.list() == ["persisted/k"]


HOSTILE_KEYS = ["..", "../x", "a/../../x", "/etc/passwd", "a//b", "a/", "", ".", "a/./b", "a\x00b", "a\nb", "a\\b", ".expstore-tmp-x"]


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_hostile_keys_raise_invalid_key_and_write_nothing(store, key):
    store.write("sentinel", b"s")
    for attempt in (
        lambda: store.write(key, b"evil"),
        lambda: store.read(key),
        lambda: store.delete(key),
        lambda: store.exists(key),
        lambda: store.read_range(key, 0, 1),
        lambda: store.version(key),
    ):
        with pytest.raises(InvalidKey) as info:
            attempt()
        assert repr(key)[1:-1][:10] in str(info.value) or key == ""
    assert store.list() == ["sentinel"]
    assert store.read("sentinel") == b"s"


def test_key_not_found_is_file_not_found_and_key_error_naming_url_and_key(store):
    with pytest.raises(KeyNotFound) as info:
        store.read("no/such/key")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, KeyError)
    assert "no/such/key" in str(info.value)
    assert store.url in str(info.value)


def test_write_returns_the_version_token(store):
    token = store.write("v", b"abc")
    assert isinstance(token, str) and token
    assert store.version("v") == token
    with pytest.raises(KeyNotFound):
        store.version("absent")


def _needs_conditional(store):
    if not store.supports_conditional_writes:
        pytest.skip(f"{store!r} has no conditional writes (tested in test_conditional_writes_unsupported)")


def test_if_absent(store):
    _needs_conditional(store)
    store.write("once", b"first", if_absent=True)
    with pytest.raises(PreconditionFailed) as info:
        store.write("once", b"second", if_absent=True)
    assert "once" in str(info.value)
    assert store.read("once") == b"first"


def test_if_match(store):
    _needs_conditional(store)
    token = store.write("cas", b"v1")
    newer = store.write("cas", b"v2", if_match=token)
    with pytest.raises(PreconditionFailed):
        store.write("cas", b"stale", if_match=token)
    assert store.read("cas") == b"v2"
    assert store.write("cas", b"v3", if_match=newer) == store.version("cas")
    with pytest.raises(PreconditionFailed):
        store.write("absent", b"x", if_match=token)
    assert not store.exists("absent")


def test_same_length_rewrites_still_change_the_version(store):
    _needs_conditional(store)
    tokens = [store.write("counter", str(i % 10).encode()) for i in range(20)]
    assert len(set(tokens)) == len(tokens) or store.url.startswith("s3://")  # S3 ETags repeat with content
    token = store.version("counter")
    store.write("counter", b"x")
    with pytest.raises(PreconditionFailed):
        store.write("counter", b"y", if_match=token)


def test_conditional_writes_unsupported(store):
    if store.supports_conditional_writes:
        pytest.skip("store supports conditional writes")
    with pytest.raises(StoreError, match="conditional"):
        store.write("k", b"x", if_absent=True)
    assert store.list() == []


def test_append(store):
    if not store.supports_append:
        with pytest.raises(StoreError, match="append"):
            store.append("log", b"line\n")
        assert store.list() == []
        return
    store.append("logs/log", b"one\n")
    store.append("logs/log", b"two\n")
    assert store.read("logs/log") == b"one\ntwo\n"


def test_closed_store_refuses_work(store):
    store.write("k", b"v")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.read("k")


def test_list_versions_gives_each_key_the_version_that_version_gives(store):
    for key in ("a/1", "a/2", "b"):
        store.write(key, key.encode())
    listed = store.list_versions("a/")
    assert list(listed) == ["a/1", "a/2"] and listed == {k: store.version(k) for k in ("a/1", "a/2")}
    token = store.write("a/1", b"changed")
    assert store.list_versions("a/")["a/1"] == token != listed["a/1"]
    assert store.list_versions("nothing/") == {}
