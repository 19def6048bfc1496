"""open_store: which URL opens which backend, and the errors for URLs it cannot open."""

from __future__ import annotations

import subprocess
import sys

import pytest

from expstore import BackendUnavailable, InvalidURL, KeyNotFound, open_store
from expstore.backends.fsspec import FsspecStore
from expstore.backends.local import LocalStore
from expstore.backends.memory import MemoryStore

from ..workers import REPO_ROOT


def test_paths_and_file_urls_open_local_stores(tmp_path):
    for url in (str(tmp_path / "a"), tmp_path / "a", f"file://{tmp_path}/a"):
        store = open_store(url)
        assert isinstance(store, LocalStore)
        assert store.root == tmp_path / "a"
    open_store(tmp_path / "a").write("k", b"v")
    assert open_store(f"file://{tmp_path}/a").read("k") == b"v"


def test_relative_path_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    open_store("./runs").write("k", b"v")
    assert (tmp_path / "runs" / "k").read_bytes() == b"v"


def test_opening_creates_nothing_and_reading_a_missing_root_raises(tmp_path):
    store = open_store(tmp_path / "not" / "yet")
    assert not (tmp_path / "not").exists()
    assert store.list() == []
    with pytest.raises(KeyNotFound):
        store.read("k")
    store.write("k", b"v")
    assert (tmp_path / "not" / "yet" / "k").exists()


def test_file_url_with_a_host_is_rejected():
    with pytest.raises(InvalidURL, match="absolute"):
        open_store("file://relative/path")


def test_memory_stores_share_values_by_path():
    open_store("memory://shared-test/sub").write("k", b"v")
    assert isinstance(open_store("memory://shared-test"), MemoryStore)
    assert open_store("memory://shared-test").read("sub/k") == b"v"


def test_other_fsspec_protocols_use_the_generic_store():
    assert isinstance(open_store("conformancefs://generic-test"), FsspecStore)


def test_unknown_scheme_names_it_and_lists_the_known_ones():
    with pytest.raises(InvalidURL) as info:
        open_store("nosuchfs://bucket/x")
    message = str(info.value)
    assert "'nosuchfs'" in message and "s3" in message and "memory" in message and "file" in message


def test_malformed_and_empty_urls():
    with pytest.raises(InvalidURL):
        open_store("")
    with pytest.raises(InvalidURL, match="scheme"):
        open_store("1a!://x")
    with pytest.raises(TypeError):
        open_store(42)


@pytest.mark.parametrize("url", ["memory://e1/..", "memory://e1/../x", "s3://b/a/../c", "zarr+memory://x/./y", "file:///tmp/a/../b"])
def test_dot_segments_in_a_url_with_a_scheme_are_invalid(url):
    with pytest.raises(InvalidURL, match=r"'\.\.?' segments") as caught:
        open_store(url)
    assert url in str(caught.value)


def test_fsspec_protocol_whose_package_is_missing_names_it():
    pytest.importorskip("fsspec")
    try:
        import gcsfs  # noqa: F401

        pytest.skip("gcsfs is installed")
    except ImportError:
        pass
    with pytest.raises(BackendUnavailable, match="gcsfs") as info:
        open_store("gs://bucket/runs")
    assert "gs://bucket/runs" in str(info.value)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)


def test_missing_s3_packages_raise_backend_unavailable_naming_the_extra():
    result = _run(
        "import sys; sys.modules['botocore'] = None\n"
        "from expstore import open_store, BackendUnavailable\n"
        "try:\n    open_store('s3://bucket/x')\n"
        "except BackendUnavailable as e:\n    print(e)\n"
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "expstore[s3]"' in result.stdout
    assert "s3://bucket/x" in result.stdout


def test_importing_expstore_imports_no_optional_backend():
    result = _run(
        "import sys, expstore\n"
        "expstore.open_store('memory://x'); expstore.open_store('.')\n"
        "print(sorted(m for m in ('s3fs', 'botocore', 'h5py', 'zarr', 'pandas') if m in sys.modules))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_store_passes_through_and_rejects_extra_options():
    store = open_store("memory://pass-through")
    assert open_store(store) is store
    with pytest.raises(TypeError):
        open_store(store, endpoint_url="http://x")


def test_hdf5_lives_on_local_disk_or_in_memory_only():
    pytest.importorskip("h5py")
    with pytest.raises(InvalidURL, match="h5\\+memory"):
        open_store("h5+s3://bucket/run.h5")
    first = open_store("h5+memory://urls-test")
    first.write("k", b"v")
    assert open_store("h5+memory://urls-test").read("k") == b"v"
