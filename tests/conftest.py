"""Fixtures shared by every test: S3 servers (started once per session) and one store per backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from expstore import Store, open_store

from .pgserver import PostgresServer, start_postgres
from .s3servers import S3Server, start_moto, start_s3rver, start_seaweedfs


class ConformanceFS(MemoryFileSystem):
    """An fsspec protocol expstore has never heard of, to prove the generic fsspec backend."""

    protocol = "conformancefs"
    store: dict = {}
    pseudo_dirs = [""]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return super()._strip_protocol(path.removeprefix("conformancefs://"))


fsspec.register_implementation("conformancefs", ConformanceFS, clobber=True)

BACKENDS = [
    "local", "memory", "s3-moto", "s3-seaweedfs", "s3-s3rver", "fsspec",
    "hdf5", "hdf5-inner", "hdf5-memory", "zarr-local", "zarr-memory", "zarr-s3-moto", "zarr-s3-seaweedfs",
    "zarr-s3-s3rver",
]
# The facades (checkpointing, logging, export, runs) sit on the Store protocol, which the conformance
# suite checks on every variant above; a module sets `STORE_BACKENDS = FACADE_BACKENDS` to run on one
# variant of each kind: local, memory, S3 on both servers, HDF5 and Zarr.
FACADE_BACKENDS = ["local", "memory", "s3-moto", "s3-seaweedfs", "hdf5", "zarr-local"]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    server = start_moto()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[S3Server]:
    server = start_seaweedfs()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3rver_server() -> Iterator[S3Server]:
    """s3rver, which ignores conditional writes; installed with npm on first use. Without Node/npm the
    tests that need it skip, except in CI (`CI=true`), where they fail."""
    try:
        server = start_s3rver()
    except RuntimeError as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"s3rver unavailable: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster on 127.0.0.1 for the whole session; fails (never skips) when its binaries are missing."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL (``postgresql://postgres@127.0.0.1:<port>/<db>``) of a fresh, empty database for one test."""
    return postgres_server.create_database()


S3_SERVERS = ["moto", "seaweedfs"]


@pytest.fixture(params=S3_SERVERS)
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    return request.getfixturevalue(f"{request.param}_server")


def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def store_location(request: pytest.FixtureRequest, tmp_path: Any) -> tuple[str, dict[str, Any]]:
    """(url, storage_options) of a fresh, empty root on the backend named by the test's parameter."""
    backend = request.param
    if backend == "local":
        return str(tmp_path / "store"), {}
    if backend == "memory":
        return f"memory://conformance-{unique()}", {}
    if backend == "fsspec":
        return f"conformancefs://conformance-{unique()}", {}
    if backend == "hdf5":
        return str(tmp_path / "run.h5"), {}
    if backend == "hdf5-inner":  # a path that runs through the file: store run.h5, keys under inner/
        return str(tmp_path / "run.h5" / "inner"), {}
    if backend == "hdf5-memory":
        return f"h5+memory://conformance-{unique()}", {}
    if backend == "zarr-local":
        return str(tmp_path / "run.zarr"), {}
    if backend == "zarr-memory":
        return f"zarr+memory://conformance-{unique()}", {}
    server: S3Server = request.getfixturevalue(f"{backend.rpartition('-')[2]}_server")
    if backend.startswith("zarr-"):
        return f"zarr+s3://expstore-test/{unique()}.zarr", server.storage_options
    return f"s3://expstore-test/{unique()}", server.storage_options


@pytest.fixture
def reopen(store_location: tuple[str, dict[str, Any]]) -> Iterator[Callable[[], Store]]:
    """Open (again) the store of `store_location`, as a new process would; closed after the test."""
    url, options = store_location
    opened: list[Store] = []

    def open_again() -> Store:
        opened.append(open_store(url, **options))
        return opened[-1]

    yield open_again
    for s in opened:
        s.close()


@pytest.fixture
def store(reopen: Callable[[], Store]) -> Store:
    return reopen()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that asks for `store_location` (directly or through `store`) runs on every backend, or on
    the module's `STORE_BACKENDS`."""
    if "store_location" in metafunc.fixturenames and not any(
        m.name == "parametrize" and "store_location" in m.args[0] for m in metafunc.definition.iter_markers()
    ):
        metafunc.parametrize("store_location", getattr(metafunc.module, "STORE_BACKENDS", BACKENDS), indirect=True)
