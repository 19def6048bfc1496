"""The checkpoint codec: exact round trips, safetensors compatibility, range reads, checksums,
hostile headers and pickle only by opt-in."""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections import OrderedDict, namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from expstore import CorruptData, KeyNotFound, Store, open_store
from expstore.format.checkpoint import (
    NATIVE_DTYPES,
    PickleNotAllowed,
    encode,
    read_checkpoint,
    read_manifest,
    write_checkpoint,
)
from expstore.format.tree import flatten

from ..trees import assert_same

safetensors_numpy = pytest.importorskip("safetensors.numpy")


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return open_store(f"memory://codec-{uuid.uuid4().hex}")
    return open_store(str(tmp_path / "store"))


@pytest.fixture
def local(tmp_path: Path) -> Store:
    return open_store(str(tmp_path / "local"))


class CountingStore(Store):
    """Wraps a store and records every read / read_range, to prove what select= fetches."""

    def __init__(self, inner: Store):
        super().__init__(inner.url)
        self.inner = inner
        self.reads: list[str] = []
        self.ranges: list[tuple[int, int | None]] = []

    def _read(self, key: str) -> bytes:
        self.reads.append(key)
        return self.inner.read(key)

    def _read_range(self, key: str, start: int, end: int | None) -> bytes:
        self.ranges.append((start, end))
        return self.inner.read_range(key, start, end)

    def _write(self, key, data, if_absent, if_match):  # type: ignore[no-untyped-def]
        return self.inner.write(key, data)

    def _size(self, key: str) -> int:
        return self.inner.size(key)


def rich_tree() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((6, 8))
    return {
        "model": {
            "w": rng.standard_normal((4, 5)).astype(np.float32),
            "b": np.arange(5, dtype=np.float64),
            "half": np.linspace(-1, 1, 7).astype(np.float16),
            "ints": [np.arange(3, dtype=t) for t in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8")],
            "mask": np.array([True, False, True]),
        },
        "odd": {
            "scalar0d": np.array(3.5),
            "empty": np.zeros((0, 3), np.int32),
            "empty_c": np.zeros(0, np.complex128),
            "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
            "big_endian_i": np.arange(4, dtype=">i4"),
            "c64": (np.arange(4) + 1j).astype(np.complex64),
            "c128": (np.arange(4) - 2j).astype(np.complex128),
            "dt": np.array(["2024-01-01T00:00:00", "NaT"], dtype="datetime64[ns]"),
            "td": np.array([1, -2], dtype="timedelta64[D]"),
            "u": np.array(["héllo", "", "🙂"]),
            "s": np.array([b"ab", b"\x00c"]),
            "struct": np.array([(1, 2.0, b"x"), (3, 4.0, b"y")], dtype=[("a", "<i4"), ("b", ">f8"), ("c", "S1")]),
            "aligned": np.zeros(2, dtype=np.dtype([("a", "u1"), ("b", "<f8", (2,))], align=True)),
            "void": np.frombuffer(b"abcdefgh", dtype="V4").copy(),
            "noncontig": base[::2, 1::3],
            "fortran": np.asfortranarray(base),
            "longdouble": np.arange(3, dtype=np.longdouble) / 3,
        },
        "scalars": [np.float32(1.5), np.int8(-3), np.uint64(2**64 - 1), np.complex128(1 - 2j), np.bool_(True),
                    np.datetime64("2020-02-02", "D"), np.float16(-0.0)],
        "plain": (None, True, False, 0, -1, 2**100, -(2**200), "text", "", "ünï", b"", b"\x00\xff",
                  float("nan"), float("inf"), float("-inf"), -0.0, 1e-308),
        "nested": {"a": [1, (2, [3, {"b": ()}])], "empty": {}, "el": [], "weird/key": 1, ".dot": 2, "": 3,
                   "%": np.ones(2)},
        "rng": np.random.default_rng(123).bit_generator.state,
        "__metadata__": np.arange(3, dtype=np.uint8),
        "step": 1000,
    }


def test_rich_tree_round_trips_exactly(store: Store) -> None:
    tree = rich_tree()
    token = write_checkpoint(store, "ck/state.ckpt", tree, extra={"iteration": 1000, "meta": {"lr": 0.1}})
    assert isinstance(token, str)
    back, manifest = read_checkpoint(store, "ck/state.ckpt")
    assert_same(tree, back)
    assert manifest["extra"] == {"iteration": 1000, "meta": {"lr": 0.1}}
    # the rng state really restores the generator
    g = np.random.default_rng()
    g.bit_generator.state = back["rng"]
    h = np.random.default_rng(123)
    assert g.random() == h.random()


def test_nested_structured_arrays_round_trip_as_raw_bytes(store: Store) -> None:
    nested = np.dtype([("outer", [("inner", "<u2"), ("flag", "|b1")]), ("w", ">c16")])
    array = np.zeros(3, nested)
    array["outer"]["inner"] = [1, 2, 3]
    write_checkpoint(store, "k", {"a": array, "one": array[1]})
    back, manifest = read_checkpoint(store, "k")
    assert_same({"a": array, "one": array[1]}, back)
    assert manifest["arrays"]["a"]["encoding"] == "raw"


def test_arrays_are_writable_and_never_write_through(store: Store) -> None:
    write_checkpoint(store, "k", {"w": np.zeros(4)})
    first, _ = read_checkpoint(store, "k")
    first["w"][:] = 7  # writable; a private copy or copy-on-write map
    again, _ = read_checkpoint(store, "k")
    np.testing.assert_array_equal(again["w"], np.zeros(4))


def test_readonly_option_returns_views(store: Store) -> None:
    write_checkpoint(store, "k", {"w": np.zeros(4)})
    tree, _ = read_checkpoint(store, "k", writable=False)
    if store.url.startswith("memory://"):
        assert not tree["w"].flags.writeable


def test_local_read_uses_a_private_memory_map(local: Store) -> None:
    import mmap

    write_checkpoint(local, "k", {"w": np.arange(1000.0)})
    tree, _ = read_checkpoint(local, "k")
    base = tree["w"]
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    assert isinstance(base, mmap.mmap)


def test_safetensors_reads_the_arrays(local: Store) -> None:
    tree = rich_tree()
    write_checkpoint(local, "ck.ckpt", tree)
    loaded = safetensors_numpy.load_file(str(Path(local.root) / "ck.ckpt"))
    _, arrays = flatten(tree, "state")
    manifest = read_manifest(local, "ck.ckpt")
    natives = 0
    for path, info in manifest["arrays"].items():
        got = loaded[info["tensor"]]
        want = arrays[path]
        if info["encoding"] == "native":
            natives += 1
            assert want.dtype.str in NATIVE_DTYPES
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
        else:
            assert got.dtype == np.uint8 and got.tobytes() == np.ascontiguousarray(want).tobytes()
    assert natives >= 12
    assert loaded[manifest["arrays"]["__metadata__"]["tensor"]].tolist() == [0, 1, 2]


def test_awkward_paths_stay_safetensors_readable(local: Store) -> None:
    tree = {"__metadata__": np.ones(2), "lone\ud800surrogate": np.arange(3), "%t0": np.zeros(1), "a/b": {"": np.ones(1)}}
    write_checkpoint(local, "k", tree)
    assert_same(tree, read_checkpoint(local, "k")[0])
    loaded = safetensors_numpy.load_file(str(Path(local.root) / "k"))
    assert len(loaded) == 4 and "__metadata__" not in loaded


def test_header_layout(store: Store) -> None:
    write_checkpoint(store, "k", {"a": np.ones(3, np.float32), "b": np.ones(2, np.float64), "c": np.ones(1, np.int8)})
    data = store.read("k")
    n = struct.unpack("<Q", data[:8])[0]
    assert (8 + n) % 8 == 0
    header = json.loads(data[8 : 8 + n])
    manifest = json.loads(header["__metadata__"]["expstore"])
    assert manifest["format"] == "expstore.checkpoint" and manifest["version"] == 1
    spans = sorted(tuple(v["data_offsets"]) for k, v in header.items() if k != "__metadata__")
    assert spans[0][0] == 0 and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert 8 + n + spans[-1][1] == len(data)
    for name, info in header.items():
        if name != "__metadata__":  # every array starts aligned to its itemsize
            size = {"F64": 8, "F32": 4, "I8": 1}[info["dtype"]]
            assert info["data_offsets"][0] % size == 0


def test_encode_is_zero_copy_for_contiguous_arrays() -> None:
    w = np.arange(1 << 16, dtype=np.float64)
    skeleton, arrays = flatten({"w": w, "nc": w[::2]}, "state")
    parts = encode(skeleton, arrays)
    views = [np.frombuffer(p, np.uint8) for p in parts[1:]]
    assert any(np.shares_memory(v, w) and v.nbytes == w.nbytes for v in views)
    assert all(p.readonly for p in parts[1:])


# ---- hypothesis ---------------------------------------------------------------------------------

dtypes = st.one_of(
    hnp.boolean_dtypes(),
    hnp.integer_dtypes(endianness="="),
    hnp.unsigned_integer_dtypes(endianness="="),
    hnp.floating_dtypes(endianness="="),
    hnp.complex_number_dtypes(endianness="="),
    hnp.integer_dtypes(endianness=">"),
    hnp.floating_dtypes(endianness=">"),
    hnp.datetime64_dtypes(),
    hnp.timedelta64_dtypes(),
    hnp.byte_string_dtypes(max_len=4),
    hnp.unicode_string_dtypes(max_len=4),
)
arrays_st = dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
leaves = st.one_of(
    arrays_st,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.binary(max_size=5),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=trees)
def test_random_trees_round_trip(tree: Any, tmp_path: Path) -> None:
    mem = open_store(f"memory://codec-{uuid.uuid4().hex}")
    write_checkpoint(mem, "k", tree)
    assert_same(tree, read_checkpoint(mem, "k")[0])
    local = open_store(str(tmp_path / "hyp"))
    write_checkpoint(local, "k", tree)
    assert_same(tree, read_checkpoint(local, "k")[0])


# ---- select= ------------------------------------------------------------------------------------


def test_select_reads_only_the_needed_ranges() -> None:
    inner = open_store(f"memory://codec-{uuid.uuid4().hex}")
    leaves = {f"l{i:03d}": np.full(100_000, i, np.float64) for i in range(20)}  # 800 kB each
    counting = CountingStore(inner)
    write_checkpoint(counting, "k", {"leaves": leaves, "step": 3})
    total = inner.size("k")

    tree, _ = read_checkpoint(counting, "k", select=["leaves/l007"])
    assert counting.reads == []  # never the whole object
    assert len(counting.ranges) == 3  # length, header, one array
    fetched = sum(end - start for start, end in counting.ranges)
    assert fetched < 800_000 + 20_000 and fetched < total / 10
    assert list(tree["leaves"]) == ["l007"] and tree["step"] == 3
    np.testing.assert_array_equal(tree["leaves"]["l007"], leaves["l007"])

    counting.ranges.clear()
    tree, _ = read_checkpoint(counting, "k", select="leaves")
    assert len(tree["leaves"]) == 20
    with pytest.raises(KeyError, match="nope"):
        read_checkpoint(counting, "k", select=["nope"])


def test_read_manifest_reads_two_ranges() -> None:
    inner = open_store(f"memory://codec-{uuid.uuid4().hex}")
    counting = CountingStore(inner)
    write_checkpoint(counting, "k", {"w": np.ones(10_000)}, extra={"iteration": 5})
    manifest = read_manifest(counting, "k")
    assert manifest["extra"] == {"iteration": 5}
    assert counting.ranges == [(0, 8), (8, counting.ranges[1][1])]
    assert counting.ranges[1][1] < 2000 and counting.reads == []


def test_select_on_local_store(local: Store) -> None:
    write_checkpoint(local, "k", {"a": np.ones(3), "b": {"c": np.zeros(2), "d": np.arange(2)}})
    tree, _ = read_checkpoint(local, "k", select=["b/c"])
    assert list(tree) == ["b"] and list(tree["b"]) == ["c"]


# ---- checksums, truncation, hostile headers -----------------------------------------------------


def test_flipped_byte_in_an_array_fails_its_checksum(store: Store) -> None:
    write_checkpoint(store, "k", {"good": np.ones(100), "bad": np.arange(100.0)})
    info = read_manifest(store, "k")["arrays"]["bad"]
    data = bytearray(store.read("k"))
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    begin = 8 + n + header[info["tensor"]]["data_offsets"][0]
    data[begin + 17] ^= 0x40
    store.write("k", bytes(data))
    with pytest.raises(CorruptData) as exc:
        read_checkpoint(store, "k")
    assert "'bad'" in str(exc.value) and store.url in str(exc.value) and "'k'" in str(exc.value)
    with pytest.raises(CorruptData, match="'bad'"):
        read_checkpoint(store, "k", select=["bad"])
    tree, _ = read_checkpoint(store, "k", select=["good"])  # the intact array still reads
    np.testing.assert_array_equal(tree["good"], np.ones(100))


@pytest.mark.parametrize("keep", [0, 5, 8, 30, -1])
def test_truncated_objects(store: Store, keep: int) -> None:
    write_checkpoint(store, "k", {"w": np.arange(1000.0)})
    data = store.read("k")
    store.write("k", data[:keep] if keep >= 0 else data[:-1])
    with pytest.raises(CorruptData) as exc:
        read_checkpoint(store, "k")
    assert store.url in str(exc.value) and "'k'" in str(exc.value)
    if keep == -1:
        with pytest.raises(CorruptData, match="truncated"):
            read_checkpoint(store, "k", select=["w"])


def test_trailing_bytes_are_rejected(store: Store) -> None:
    write_checkpoint(store, "k", {"w": np.arange(4.0)})
    store.write("k", store.read("k") + b"\x00" * 8)
    with pytest.raises(CorruptData, match="trailing"):
        read_checkpoint(store, "k")


def test_a_header_read_before_is_checked_again_against_the_object(store: Store) -> None:
    """Validated headers are memoized by their bytes: a later object with the same header but
    truncated arrays must still fail, and name its own key."""
    write_checkpoint(store, "k", {"w": np.arange(1000.0)})
    data = store.read("k")
    read_checkpoint(store, "k")
    store.write("cut", data[:-1])
    for _ in range(2):
        with pytest.raises(CorruptData, match="truncated") as exc:
            read_checkpoint(store, "cut")
        assert "'cut'" in str(exc.value)
    np.testing.assert_array_equal(read_checkpoint(store, "k")[0]["w"], np.arange(1000.0))


def test_renaming_the_fields_of_a_loaded_array_does_not_change_later_reads(store: Store) -> None:
    """numpy lets a caller rename a structured dtype's fields in place; the header memo must not share it."""
    write_checkpoint(store, "k", {"s": np.zeros(4, [("x", "<f8"), ("y", "<i4")])})
    first = read_checkpoint(store, "k")[0]["s"]
    first.dtype.names = ("p", "q")
    assert read_checkpoint(store, "k")[0]["s"].dtype.names == ("x", "y")
    assert read_checkpoint(store, "k", select=["s"])[0]["s"].dtype.names == ("x", "y")


def test_changing_a_returned_manifest_does_not_change_later_reads(store: Store) -> None:
    write_checkpoint(store, "k", {"a": np.ones(3), "b": [1, 2]}, extra={"note": {"x": 1}})
    tree, manifest = read_checkpoint(store, "k")
    manifest["tree"]["items"].clear()
    manifest["extra"]["note"]["x"] = 2
    read_manifest(store, "k")["arrays"].clear()
    again, fresh = read_checkpoint(store, "k")
    assert_same(again, {"a": np.ones(3), "b": [1, 2]})
    assert fresh["extra"] == {"note": {"x": 1}} and fresh["arrays"]

def test_missing_key(store: Store) -> None:
    with pytest.raises(KeyNotFound):
        read_checkpoint(store, "nothing")
    with pytest.raises(KeyNotFound):
        read_manifest(store, "nothing")


def _good_parts() -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """The header dict, manifest dict and array bytes of a small valid checkpoint, to tamper with."""
    skeleton, arrays = flatten({"a": np.arange(4, dtype=np.float32), "b": np.arange(3, dtype=">i2")}, "state")
    parts = encode(skeleton, arrays, {"iteration": 1})
    head = bytes(parts[0])
    n = struct.unpack("<Q", head[:8])[0]
    header = json.loads(head[8 : 8 + n])
    manifest = json.loads(header["__metadata__"]["expstore"])
    return header, manifest, b"".join(bytes(p) for p in parts[1:])


def _assemble(header: dict[str, Any], manifest: dict[str, Any] | None, body: bytes) -> bytes:
    if manifest is not None:
        header = {**header, "__metadata__": {"expstore": json.dumps(manifest)}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


def _hostile_objects() -> dict[str, bytes]:
    header, manifest, body = _good_parts()
    cases: dict[str, bytes] = {}

    def tweak(name: str, fn: Any, with_manifest: bool = True) -> None:
        h, m = json.loads(json.dumps(header)), json.loads(json.dumps(manifest))
        fn(h, m)
        cases[name] = _assemble(h, m if with_manifest else None, body)

    cases["length_larger_than_object"] = struct.pack("<Q", 10_000) + b"{}" + body
    cases["length_absurd"] = struct.pack("<Q", 2**63) + b"{}"
    cases["length_over_100MiB"] = struct.pack("<Q", 200 * 2**20) + b"{}" * 100
    cases["bad_json"] = struct.pack("<Q", 8) + b'{"a": [ ' + body
    cases["not_utf8"] = struct.pack("<Q", 8) + b'{"\xff":1}' + body
    cases["json_array"] = struct.pack("<Q", 8) + b"[1,2,3] " + body
    cases["deep_json"] = _assemble_raw(b"[" * 100_000 + b"]" * 100_000)
    tweak("no_metadata", lambda h, m: h.pop("__metadata__"), with_manifest=False)
    tweak("metadata_without_manifest", lambda h, m: h.update({"__metadata__": {"other": "x"}}), with_manifest=False)
    tweak("manifest_not_json", lambda h, m: h.update({"__metadata__": {"expstore": "{nope"}}), with_manifest=False)
    tweak("wrong_format", lambda h, m: m.update(format="other"))
    tweak("future_version", lambda h, m: m.update(version=99))
    tweak("offsets_past_end", lambda h, m: (h["b"].update(data_offsets=[16, 1_000_000], shape=[999_984]),
                                            m["arrays"]["b"].update(shape=[499_992])))
    tweak("offsets_overlap", lambda h, m: h["b"].update(data_offsets=[0, 6]))
    tweak("offsets_negative", lambda h, m: h["a"].update(data_offsets=[-16, 0]))
    tweak("offsets_not_ints", lambda h, m: h["a"].update(data_offsets=[0.0, 16.0]))
    tweak("offsets_bool", lambda h, m: h["a"].update(data_offsets=[False, 16]))
    tweak("dtype_shape_vs_bytes", lambda h, m: h["a"].update(shape=[5]))
    tweak("unknown_st_dtype", lambda h, m: h["a"].update(dtype="Q7"))
    tweak("negative_shape", lambda h, m: h["a"].update(shape=[-4]))
    tweak("huge_shape", lambda h, m: (h["a"].update(shape=[2**40, 2**40]), m["arrays"]["a"].update(shape=[2**40, 2**40])))
    tweak("too_many_dims", lambda h, m: h["a"].update(shape=[1] * 65))
    tweak("manifest_shape_mismatch", lambda h, m: m["arrays"]["a"].update(shape=[2, 3]))
    tweak("manifest_dtype_mismatch", lambda h, m: m["arrays"]["a"].update(dtype="<i4"))
    tweak("manifest_dtype_unknown", lambda h, m: m["arrays"]["b"].update(dtype="<Z9"))
    tweak("manifest_dtype_object", lambda h, m: m["arrays"]["b"].update(dtype="|O"))
    tweak("manifest_missing_array", lambda h, m: m["arrays"].pop("b"))
    tweak("tensor_not_in_tree", lambda h, m: (h.update(extra={"dtype": "U8", "shape": [0], "data_offsets": [22, 22]})))
    tweak("tree_names_unknown_array", lambda h, m: m["tree"]["items"][0][1].update(path="zzz"))
    tweak("tree_node_unknown", lambda h, m: m["tree"]["items"].append(["x", {"t": "exec", "v": "rm -rf"}]))
    tweak("tree_malformed", lambda h, m: m["tree"].update(items="nope"))
    tweak("tree_bad_int", lambda h, m: m["tree"]["items"].append(["x", {"t": "int", "v": "9" * 10_000}]))
    tweak("crc_not_int", lambda h, m: m["arrays"]["a"].update(crc32c="abc"))
    tweak("encoding_mismatch", lambda h, m: m["arrays"]["a"].update(encoding="pickle"))
    return cases


def _assemble_raw(text: bytes) -> bytes:
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


# What each hostile object must be rejected for (a fragment of the message of a full read).
HOSTILE = {
    "bad_json": "not JSON", "crc_not_int": "crc32c", "deep_json": "not JSON", "dtype_shape_vs_bytes": "does not fill",
    "encoding_mismatch": "encoding", "future_version": "newer", "huge_shape": "shape", "json_array": "not a JSON object",
    "length_absurd": "header length", "length_larger_than_object": "truncated", "length_over_100MiB": "header length",
    "manifest_dtype_mismatch": "does not match", "manifest_dtype_object": "not allowed",
    "manifest_dtype_unknown": "not a numpy dtype", "manifest_missing_array": "no entry", "manifest_not_json": "not JSON",
    "manifest_shape_mismatch": "bytes, its tensor holds", "metadata_without_manifest": "no 'expstore' manifest",
    "negative_shape": "shape", "no_metadata": "__metadata__", "not_utf8": "utf-8", "offsets_bool": "data_offsets",
    "offsets_negative": "data_offsets", "offsets_not_ints": "data_offsets", "offsets_overlap": "gap or overlap",
    "offsets_past_end": "truncated", "tensor_not_in_tree": "not in the tree", "too_many_dims": "shape",
    "tree_bad_int": "malformed", "tree_malformed": "malformed", "tree_names_unknown_array": "no entry",
    "tree_node_unknown": "unknown node type", "unknown_st_dtype": "'Q7'", "wrong_format": "format",
}


def test_every_hostile_case_has_an_expectation() -> None:
    assert set(HOSTILE) == set(_hostile_objects())


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_headers_raise_corrupt_data(store: Store, case: str) -> None:
    store.write("evil", _hostile_objects()[case])
    with pytest.raises(CorruptData) as exc:
        read_checkpoint(store, "evil")
    assert HOSTILE[case] in str(exc.value)
    assert store.url in str(exc.value) and "'evil'" in str(exc.value)
    with pytest.raises(CorruptData):  # the range-reading path checks the same (or fails its read)
        read_checkpoint(store, "evil", select=["a", "b"])


def test_valid_assembled_object_reads(store: Store) -> None:
    """The tamper helper itself builds readable objects, so the hostile cases fail for their tweak."""
    header, manifest, body = _good_parts()
    store.write("ok", _assemble(header, manifest, body))
    tree, m = read_checkpoint(store, "ok")
    np.testing.assert_array_equal(tree["a"], np.arange(4, dtype=np.float32))
    assert m["extra"] == {"iteration": 1}


# ---- pickle -------------------------------------------------------------------------------------


def _fn(x: int) -> int:
    return x + 1


def test_unsupported_leaf_names_its_path_and_writes_nothing(store: Store) -> None:
    state = {"model": {"w": np.ones(3)}, "optimizer": {"lr": 0.1, "fn": _fn}}
    with pytest.raises(TypeError, match=r"state\['optimizer'\]\['fn'\]"):
        write_checkpoint(store, "k", state)
    assert not store.exists("k")
    with pytest.raises(TypeError, match=r"state\['o'\]"):
        write_checkpoint(store, "k", {"o": np.array([object()], dtype=object)})
    assert not store.exists("k")


def test_extra_must_be_json(store: Store) -> None:
    with pytest.raises(TypeError, match=r"extra\['meta'\]\['x'\]"):
        write_checkpoint(store, "k", {"w": np.ones(1)}, extra={"meta": {"x": np.float32(1)}})
    with pytest.raises(TypeError, match=r"extra\['loss'\]"):
        write_checkpoint(store, "k", {}, extra={"loss": float("nan")})
    assert not store.exists("k")


Point = namedtuple("Point", "x y")


class Opaque:
    def __init__(self, v: int):
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.v == self.v


def test_pickle_round_trip_with_opt_in(store: Store) -> None:
    state = {
        "w": np.arange(3.0),
        "opt": {"fn": _fn, "obj": Opaque(4), "objarr": np.array([1, "a", None], dtype=object),
                "tuplekeys": {(1, 2): "a", (3,): "b"}, "nt": Point(1, np.ones(2))},
        "od": OrderedDict(a=1),
    }
    write_checkpoint(store, "k", state, allow_pickle=True)
    manifest = read_manifest(store, "k")
    assert {p for p, i in manifest["arrays"].items() if i["encoding"] == "pickle"} == {
        "opt/fn", "opt/obj", "opt/objarr", "opt/tuplekeys", "opt/nt"}
    with pytest.raises(PickleNotAllowed) as exc:
        read_checkpoint(store, "k")
    assert "opt/fn" in str(exc.value) and "'k'" in str(exc.value)
    back, _ = read_checkpoint(store, "k", allow_pickle=True)
    assert back["opt"]["fn"] is _fn and back["opt"]["obj"] == Opaque(4)
    assert back["opt"]["objarr"].dtype == object and back["opt"]["objarr"].tolist() == [1, "a", None]
    assert back["opt"]["tuplekeys"] == {(1, 2): "a", (3,): "b"} and back["opt"]["nt"].x == 1
    np.testing.assert_array_equal(back["w"], np.arange(3.0))
    part, _ = read_checkpoint(store, "k", select=["w"], allow_pickle=True)
    assert list(part) == ["w", "opt", "od"] and part["opt"] == {}  # unselected leaves are left out


class Exploit:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["written_by_codec", "crafted_as_raw_array"])
def test_pickle_payload_never_runs_without_opt_in(store: Store, tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    if how == "written_by_codec":
        write_checkpoint(store, "k", {"x": Exploit(str(marker))}, allow_pickle=True)
        assert not marker.exists()
        with pytest.raises(PickleNotAllowed):
            read_checkpoint(store, "k")
        with pytest.raises(PickleNotAllowed):
            read_checkpoint(store, "k", select=["x"])
    else:
        # a file claiming the payload is a plain uint8 array read as a pickle node, or vice versa
        import pickle

        payload = np.frombuffer(pickle.dumps(Exploit(str(marker))), np.uint8)
        skeleton = {"t": "dict", "items": [["x", {"t": "pickle", "path": "x"}]]}
        head = bytes(encode(skeleton, {"x": payload})[0])
        n = struct.unpack("<Q", head[:8])[0]
        header = json.loads(head[8 : 8 + n])
        manifest = json.loads(header["__metadata__"]["expstore"])
        manifest["arrays"]["x"]["encoding"] = "raw"  # lie: hide the pickle from the encoding table
        store.write("k", _assemble(header, manifest, payload.tobytes()))
        with pytest.raises((CorruptData, PickleNotAllowed)):
            read_checkpoint(store, "k")
    assert not marker.exists()
    if how == "written_by_codec":
        read_checkpoint(store, "k", allow_pickle=True)
        assert marker.exists()  # the payload was live: only the opt-in ran it
