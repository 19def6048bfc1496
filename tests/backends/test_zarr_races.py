"""Zarr under concurrent writers and readers: states a race leaves, set up exactly.

The statistical version (8 processes saving into one local `.zarr` while another loads) is in
tests/checkpointing/test_many_writers.py.
"""

from __future__ import annotations

import uuid

import pytest

pytest.importorskip("zarr")

from expstore import KeyNotFound, open_store  # noqa: E402
from expstore.backends.zarr import store as zarr_backend


def test_a_late_sweep_never_deletes_a_version_committed_after_its_own():
    url = f"zarr+memory://late-sweep-{uuid.uuid4().hex[:8]}"
    a, b = open_store(url), open_store(url)
    first = a.write("k", b"first")
    b.write("k", b"second")  # replaces (and deletes) a's version
    # a's sweep runs only now, as when b commits between a's pointer switch and a's sweep
    a._run(a._sweep("k", first, None, zarr_backend.ORPHAN_GRACE_SECONDS))
    assert a.read("k") == b"second"


def test_a_root_holding_only_a_first_writers_temp_file_reads_as_empty(tmp_path):
    root = tmp_path / "first.zarr"
    root.mkdir()
    (root / "zarr.0123456789abcdef.partial").write_bytes(b"{")  # zarr's temp file before its rename
    store = open_store(root)
    assert store.list() == []
    with pytest.raises(KeyNotFound):
        store.read_tree("k")
