"""Many processes saving distinct iterations into one checkpoint history lose no update;
on a local Zarr store a reader process loads the latest checkpoint all the while."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from expstore.checkpointing import CheckpointManager
from expstore.checkpointing.retention import select_retained

from ..workers import REPO_ROOT
from ..workers.sharding_workers import save_many, tag_of

WRITERS, SAVES = 8, 20
ITERATIONS = list(range(1, WRITERS * SAVES + 1))


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    """One spawn pool of WRITERS processes for the whole module (spawning costs seconds on 2 cores)."""
    with multiprocessing.get_context("spawn").Pool(WRITERS) as p:
        yield p


def location(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> tuple[str, dict[str, Any]]:
    if backend == "local":
        return str(tmp_path / "ckpt"), {}
    if backend == "zarr":
        return str(tmp_path / "ckpt.zarr"), {}
    server = request.getfixturevalue(f"{backend}_server")
    return f"s3://expstore-test/writers-{uuid.uuid4().hex[:8]}", server.storage_options


def race(pool: Any, url: str, options: dict[str, Any], keep_last_n: int | None) -> CheckpointManager:
    """WRITERS processes save interleaved iterations (w+1, w+1+WRITERS, ...) into experiment "many"."""
    jobs = [(url, options, "many", ITERATIONS[w::WRITERS], keep_last_n) for w in range(WRITERS)]
    assert sum(pool.starmap(save_many, jobs)) == len(ITERATIONS)
    return CheckpointManager(url, "many", keep_last_n=keep_last_n, **options)


def start_reader(url: str) -> subprocess.Popen[str]:
    """A process that loads the latest checkpoint of "many" until its stdin closes (tests/workers/zarr_workers.py)."""
    reader = subprocess.Popen(
        [sys.executable, "-m", "tests.workers.zarr_workers", "read_checkpoints", url, "many"],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert reader.stdout is not None and reader.stdout.readline().strip() == "ready", reader.communicate()[1]
    return reader


def reader_report(reader: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """(loads done, errors) of a reader, once told to stop."""
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    lines = out.splitlines()
    return int(lines[0].split()[1]), [line for line in lines[1:] if line.startswith("error")]


# Racing writers need a server whose conditional PUT is atomic. Not moto: its put_object checks
# If-Match / If-None-Match and then stores the object with no lock across its request threads, so
# two racing compare-and-swaps can both pass (docs/decisions.md). moto runs the single-writer tests.
BACKENDS = ["local", "zarr", pytest.param("seaweedfs", marks=pytest.mark.s3)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_save_of_8_writers_is_indexed(backend, pool, request, tmp_path):
    url, options = location(backend, request, tmp_path)
    reader = start_reader(url) if backend == "zarr" else None
    try:
        m = race(pool, url, options, keep_last_n=None)
    finally:
        if reader is not None:
            reads, errors = reader_report(reader)
    if reader is not None:
        assert errors == [] and reads > 0
    with m:
        listed = m.list_checkpoints()
        assert [c["iteration"] for c in listed] == ITERATIONS
        writers = [c["metadata"]["by"] for c in sorted(listed, key=lambda c: c["timestamp"])]
        assert sum(a != b for a, b in zip(writers, writers[1:])) > WRITERS  # the writers really overlapped
        for c in listed[:: len(listed) // 8] + listed[-1:]:
            assert int(m.load_checkpoint(c)["state"]["w"][0]) == c["iteration"]
        assert m.verify() == []
        assert m.gc() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_retention_under_racing_writers(backend, pool, request, tmp_path):
    url, options = location(backend, request, tmp_path)
    with race(pool, url, options, keep_last_n=3) as m:
        everything = [{"iteration": i, "tags": [tag_of(i)] if tag_of(i) else []} for i in ITERATIONS]
        kept, _ = select_retained(everything, keep_last_n=3)
        listed = m.list_checkpoints()
        assert [c["iteration"] for c in listed] == [e["iteration"] for e in kept]
        assert [c["tags"] for c in listed] == [e["tags"] for e in kept]
        assert sorted(m.store.list("many_iter_")) == [c["key"] for c in listed]  # nothing missing, nothing left over
        assert m.verify() == []
