"""Crash safety: a writer killed with SIGKILL mid-rewrite leaves a complete old or new value."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest

from expstore import open_store

from ..workers import REPO_ROOT

MiB = 2**20
SIZE = 64 * MiB
KILLS = 20


def _kill_writer_repeatedly(url: str, options: dict, kills: int, window: float) -> list[int]:
    store = open_store(url, **options)
    store.write("value", bytes([0]) * SIZE)
    rng = random.Random(1234)
    seen = []
    for _ in range(kills):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.workers.common", url, json.dumps(options), str(SIZE)],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout.readline() == b"writing\n"
            time.sleep(rng.uniform(0, window))  # a random instant inside the rewrite loop, not an assert
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        value = store.read("value")
        assert len(value) == SIZE, f"torn value: {len(value)} bytes"
        assert value.count(value[:1]) == SIZE, "mixed generations in one value"
        seen.append(value[0])
    assert len(set(seen)) > 1, "the writer never committed a new value between kills"
    return seen


def test_local_value_survives_sigkill(tmp_path):
    root = tmp_path / "crash"
    _kill_writer_repeatedly(str(root), {}, KILLS, window=1.0)
    store = open_store(root)
    assert store.list() == ["value"]  # leftover temp files never show as keys
    # every temp file a killed writer left with data in it; an empty one younger than 5 s stays (its
    # writer may be alive, between creating the file and locking it)
    written = sorted(p.name for p in root.iterdir() if p.name.startswith(".expstore-tmp-") and p.stat().st_size)
    assert written == [name for name in store.remove_stale_temp_files() if name in written]
    assert [p.name for p in root.iterdir() if p.name.startswith(".expstore-tmp-") and p.stat().st_size] == []
    assert store.list() == ["value"]


def test_stale_temp_file_cleanup_keeps_a_live_writers_file(tmp_path):
    import fcntl
    import os

    store = open_store(tmp_path)
    store.write("a/v", b"1")
    live = tmp_path / "a" / ".expstore-tmp-live"
    dead = tmp_path / "a" / ".expstore-tmp-dead"
    dead.write_bytes(b"partial")
    fd = os.open(live, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a writer in another process holds it
    try:
        os.write(fd, b"in flight")
        assert store.remove_stale_temp_files() == ["a/.expstore-tmp-dead"]
        assert live.exists() and not dead.exists()
    finally:
        os.close(fd)
    assert store.read("a/v") == b"1"
    empty = tmp_path / ".expstore-tmp-just-created"  # a writer may be between creating and locking it
    empty.touch()
    assert store.remove_stale_temp_files() == ["a/.expstore-tmp-live"] and empty.exists()
    os.utime(empty, (time.time() - 60, time.time() - 60))  # a minute old: no writer takes that long
    assert store.remove_stale_temp_files() == [".expstore-tmp-just-created"]


@pytest.mark.s3
def test_s3_value_survives_sigkill(seaweedfs_server):
    _kill_writer_repeatedly(f"s3://expstore-test/crash-{uuid.uuid4().hex[:8]}", seaweedfs_server.storage_options, KILLS, window=2.0)
