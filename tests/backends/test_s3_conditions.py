"""Stores without conditional writes, above all S3 servers that accept the headers and ignore them
(s3rver): found out, never trusted; the checkpoint manager refuses to save there unless single_writer.

Conformance on s3rver runs in tests/conformance (backends "s3-s3rver" and "zarr-s3-s3rver"); this
module covers the probe and what the checkpoint manager does on such a server.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import uuid

import numpy as np
import pytest

from expstore import CorruptData, PreconditionFailed, StoreError, open_store
from expstore.backends import s3_conditions
from expstore.backends.memory import MemoryStore
from expstore.checkpointing import CheckpointManager

from ..workers.conditional_workers import save_alone, try_saves

PROCESSES, SAVES = 4, 15


def _url(tag: str, scheme: str = "s3") -> str:
    return f"{scheme}://expstore-test/{tag}-{uuid.uuid4().hex[:10]}"


def _probes_left(server, url: str) -> list[str]:
    prefix = url.partition("://expstore-test/")[2]
    listed = server.boto3_client().list_objects_v2(Bucket="expstore-test", Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in listed if s3_conditions.PROBE_PREFIX in o["Key"]]


@pytest.mark.s3
@pytest.mark.parametrize("scheme", ["s3", "zarr+s3"])
def test_a_server_that_ignores_conditions_is_found_out_and_refused(s3rver_server, scheme):
    url = _url("ignores", scheme)
    store = open_store(url, **s3rver_server.storage_options)
    store.write("k", b"first")
    assert store.supports_conditional_writes is False
    with pytest.raises(StoreError, match="ignores conditional writes") as info:
        store.write("k", b"second", if_absent=True)
    assert url in str(info.value) and "'k'" in str(info.value)
    for version in ('"stale"', store.version("k")):
        with pytest.raises(StoreError, match="ignores conditional writes"):
            store.write("k", b"third", if_match=version)
    assert store.read("k") == b"first"  # never a silent overwrite
    store.write("k", b"plain")  # an unconditional write is a plain PUT: last writer wins
    store.write_tree("t", {"w": np.arange(4)})
    assert store.read("k") == b"plain" and store.list() == ["k", "t"] and _probes_left(s3rver_server, url) == []
    if scheme == "zarr+s3":
        assert store.reclaim(older_than=0) == 0  # each switch of the pointer dropped the version it replaced


@pytest.mark.s3
def test_s3_and_zarr_stores_share_one_probe_per_bucket(s3rver_server):
    bucket = f"probe-{uuid.uuid4().hex[:10]}"
    assert open_store(f"zarr+s3://{bucket}/run.zarr", **s3rver_server.storage_options).supports_conditional_writes is False
    wrong_key = dict(s3rver_server.storage_options, key="not-the-key", secret="not-the-secret")
    assert open_store(f"s3://{bucket}/b", **wrong_key).supports_conditional_writes is False  # no second probe
    assert [where for where in s3_conditions._known if where[1] == bucket] == [(s3rver_server.endpoint_url, bucket)]


@pytest.mark.s3
def test_zarr_single_writer_manager_saves_prunes_and_loads_on_a_server_without_conditions(s3rver_server):
    url, options = _url("alone", "zarr+s3"), s3rver_server.storage_options
    with pytest.raises(StoreError, match="ignores conditional writes.*single_writer=True") as info:
        CheckpointManager(url, "exp", **options).save_checkpoint({"w": np.arange(3)}, 1)
    assert url in str(info.value) and "exp_index.json" in str(info.value)
    with CheckpointManager(url, "exp", keep_last_n=3, single_writer=True, **options) as manager:
        assert manager.store.list() == []  # the refused save wrote nothing
        for it in range(1, 9):
            manager.save_checkpoint({"w": np.full(3, it), "step": it}, it)
        assert [c["iteration"] for c in manager.list_checkpoints()] == [6, 7, 8]
        assert manager.store.list("exp_iter_") == [c["key"] for c in manager.list_checkpoints()]
        assert manager.verify() == []
    with CheckpointManager(url, "exp", **options) as reader:  # loading needs no promise
        loaded = reader.load_checkpoint()
        assert loaded["iteration"] == 8 and loaded["state"]["w"].tolist() == [8, 8, 8]


@pytest.mark.s3
@pytest.mark.parametrize("scheme", ["s3", "zarr+s3"])
@pytest.mark.parametrize("server", ["moto", "seaweedfs"])
def test_servers_that_honour_conditions_keep_them(server, scheme, request):
    s3 = request.getfixturevalue(f"{server}_server")
    url = _url("honours", scheme)
    store = open_store(url, **s3.storage_options)
    store.write("k", b"first")
    assert store.supports_conditional_writes is True
    with pytest.raises(PreconditionFailed):
        store.write("k", b"second", if_absent=True)
    assert _probes_left(s3, url) == [] and store.list() == ["k"]


@pytest.mark.s3
def test_the_probe_runs_once_per_bucket_per_process(s3rver_server):
    bucket = f"probe-{uuid.uuid4().hex[:10]}"
    first = open_store(f"s3://{bucket}/a", **s3rver_server.storage_options)
    assert first.supports_conditional_writes is False  # also creates the missing bucket for its probe
    wrong_key = dict(s3rver_server.storage_options, key="not-the-key", secret="not-the-secret")
    second = open_store(f"s3://{bucket}/b", **wrong_key)  # a second probe would fail with these
    assert second.supports_conditional_writes is False
    with pytest.raises(StoreError, match="InvalidAccessKeyId"):
        second.write("k", b"v")
    assert (s3rver_server.endpoint_url, bucket) in s3_conditions._known


@pytest.mark.s3
def test_racing_managers_are_refused_not_silently_lost(s3rver_server):
    """4 processes x 15 saves into one history: every save is either indexed or refused, none lost."""
    url, options = _url("race"), s3rver_server.storage_options
    jobs = [(url, options, list(range(w + 1, PROCESSES * SAVES + 1, PROCESSES))) for w in range(PROCESSES)]
    with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
        outcomes = pool.starmap(try_saves, jobs)
    saved = sorted(it for done, _ in outcomes for it in done)
    refusals = [message for _, refused in outcomes for message in refused]
    with CheckpointManager(url, "race", keep_last_n=None, **options) as manager:
        assert [c["iteration"] for c in manager.list_checkpoints()] == saved
        assert manager.store.list() == [c["key"] for c in manager.list_checkpoints()]  # nothing half-saved
    assert len(saved) + len(refusals) == PROCESSES * SAVES
    assert refusals and all("ignores conditional writes" in m and "single_writer=True" in m for m in refusals)
    assert all(url in m and "race_index.json" in m for m in refusals)


@pytest.mark.s3
def test_single_writer_saves_and_prunes_on_a_server_without_conditions(s3rver_server):
    url, options = _url("alone"), s3rver_server.storage_options
    with CheckpointManager(url, "exp", keep_last_n=3, single_writer=True, **options) as manager:
        for it in range(1, 16):
            manager.save_checkpoint({"w": np.full(3, it)}, it)
        assert [c["iteration"] for c in manager.list_checkpoints()] == [13, 14, 15]
        assert int(manager.load_checkpoint()["state"]["w"][0]) == 15
        assert manager.store.list("exp_iter_") == [c["key"] for c in manager.list_checkpoints()]
    with pytest.raises(TypeError, match="single_writer"):
        CheckpointManager(url, "exp", single_writer="yes", **options)


@pytest.mark.s3
def test_sharded_saves_are_refused_too_and_work_with_single_writer(s3rver_server):
    url, options = _url("sharded"), s3rver_server.storage_options
    ranks = [CheckpointManager(url, "sh", keep_last_n=None, rank=r, world_size=2, **options) for r in range(2)]
    with pytest.raises(StoreError, match="single_writer=True"):
        ranks[0].save_checkpoint({"w": np.arange(3)}, 1)
    assert ranks[0].store.list() == []  # refused before the shard was written
    ranks = [CheckpointManager(url, "sh", rank=r, world_size=2, single_writer=True, **options) for r in range(2)]
    for r, m in enumerate(ranks):
        m.save_checkpoint({"w": np.full(3, r)}, 1)
    assert [c["iteration"] for c in ranks[0].list_checkpoints()] == [1]
    assert int(ranks[1].load_checkpoint(rank=1)["state"]["w"][0]) == 1


def test_the_generic_fsspec_store_needs_single_writer_as_well():
    url = f"conformancefs://single-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreError, match="does not support conditional writes.*single_writer=True"):
        CheckpointManager(url, "exp").save_checkpoint({"w": np.arange(3)}, 1)
    with CheckpointManager(url, "exp", single_writer=True) as manager:
        manager.save_checkpoint({"w": np.arange(3)}, 1)
        assert manager.load_checkpoint()["iteration"] == 1


@pytest.mark.s3
def test_a_reader_does_not_report_an_index_being_replaced_as_corrupt(s3rver_server):
    """s3rver truncates an object and rewrites it in place, so a reader racing the one writer catches
    half-written indexes; those reads are retried. (A body shorter than the size s3rver announces
    stalls until the read timeout instead: BackendUnavailable, not counted here.)"""
    url, options = _url("torn"), s3rver_server.storage_options
    reader = CheckpointManager(url, "alone", **options)
    corrupt = reads = 0
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        writer = pool.apply_async(save_alone, (url, options, list(range(1, 61))))
        while not writer.ready() or reads == 0:
            try:
                reader.list_checkpoints()
                reads += 1
            except CorruptData:
                corrupt += 1
            except StoreError:
                pass
        assert writer.get() == 60
    assert corrupt == 0 and reads > 0
    assert [c["iteration"] for c in reader.list_checkpoints()] == list(range(1, 61))


class _TornIndexStore(MemoryStore):
    """A memory store whose first reads of the index return half of it, as a non-atomic PUT would."""

    def __init__(self, torn_reads: int):
        super().__init__(f"torn-{uuid.uuid4().hex[:8]}")
        self.torn_reads = torn_reads

    def _read(self, key: str) -> bytes:
        data = super()._read(key)
        if key.endswith("_index.json") and self.torn_reads > 0:
            self.torn_reads -= 1
            return data[: len(data) // 2]
        return data


def test_torn_index_reads_are_retried_then_reported():
    store = _TornIndexStore(torn_reads=0)
    with CheckpointManager(store, "exp") as manager:
        manager.save_checkpoint({"w": np.arange(3)}, 1)
        store.torn_reads = 3
        assert manager.load_checkpoint()["iteration"] == 1
        store.torn_reads = 100
        with pytest.raises(CorruptData, match="exp_index.json"):
            manager.list_checkpoints()


@pytest.mark.s3
def test_a_probe_object_in_an_empty_zarr_root_is_not_taken_for_foreign_content(moto_server):
    """A reader may list the root while another process's probe object is its only content."""
    url = _url("probed", "zarr+s3")
    prefix = url.partition("://expstore-test/")[2]
    client = moto_server.boto3_client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket="expstore-test")
    client.put_object(Bucket="expstore-test", Key=f"{prefix}/{s3_conditions.probe_key()}", Body=b"p")
    store = open_store(url, **moto_server.storage_options)
    assert store.list() == [] and store.exists("k") is False
    store.write("k", b"v")
    assert store.read("k") == b"v"


@pytest.mark.s3
@pytest.mark.parametrize("server", ["moto", "seaweedfs", "s3rver"])
def test_the_probe_of_an_empty_zarr_root_leaves_it_empty(server, request):
    """The probe runs under the root; SeaweedFS keeps a folder marker there after deleting it."""
    s3 = request.getfixturevalue(f"{server}_server")
    store = open_store(f"zarr+s3://probe-{uuid.uuid4().hex[:10]}/run.zarr", **s3.storage_options)
    assert store.supports_conditional_writes is (server != "s3rver")  # the first probe of this bucket
    assert store.list() == [] and store.exists("k") is False
    store.write("values/v", b"")
    assert store.list() == ["values/v"] and store.read("values/v") == b""
