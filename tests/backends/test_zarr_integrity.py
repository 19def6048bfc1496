"""Zarr integrity: every array carries a crc32c; damage anywhere is `CorruptData` naming the array and
the key, and `CheckpointManager` reports it in `verify()` and falls back to the previous checkpoint.

Damage is done the way it happens: files deleted, truncated or overwritten on disk, objects deleted
or replaced on S3 (moto over HTTP), never by patching the reader.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")

from expstore import CorruptData, open_store  # noqa: E402
from expstore.checkpointing import CheckpointManager  # noqa: E402
from expstore.format.checksum import CRC32C_ATTRIBUTE  # noqa: E402

from ..workers import REPO_ROOT

ELEMENTS = 300_000  # float32, four chunks of 75,000 values each


def weights(iteration: int) -> np.ndarray:
    return np.arange(ELEMENTS, dtype=np.float32) + iteration


def save_two(url: str, options: dict[str, Any]) -> CheckpointManager:
    manager = CheckpointManager(url, "z", **options)
    for iteration in (1, 2):
        manager.save_checkpoint({"w": weights(iteration), "b": np.full(3, iteration)}, iteration)
    return manager


class LocalChunks:
    """The chunk files of the live version of a key, on disk."""

    def __init__(self, root: str):
        self.root = Path(root)

    def chunk(self, key: str, index: int) -> Path:
        (path,) = self.root.joinpath(key).glob(f"v-*/state/w/c/{index}")
        return path

    def delete(self, key: str, index: int) -> None:
        self.chunk(key, index).unlink()

    def truncate(self, key: str, index: int) -> None:
        with self.chunk(key, index).open("r+b") as f:
            f.truncate(500)

    def flip(self, key: str, index: int) -> None:
        path = self.chunk(key, index)
        data = bytearray(path.read_bytes())
        data[1000:1008] = bytes(b ^ 0xFF for b in data[1000:1008])
        path.write_bytes(bytes(data))


class S3Chunks:
    """The chunk objects of the live version of a key, on an S3 server, changed with boto3."""

    def __init__(self, server: Any, bucket: str, prefix: str):
        self.s3, self.bucket, self.prefix = server.boto3_client(), bucket, prefix

    def chunk(self, key: str, index: int) -> str:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/{key}/")["Contents"]
        (name,) = [o["Key"] for o in listed if o["Key"].endswith(f"/state/w/c/{index}")]
        return name

    def delete(self, key: str, index: int) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self.chunk(key, index))

    def truncate(self, key: str, index: int) -> None:
        name = self.chunk(key, index)
        body = self.s3.get_object(Bucket=self.bucket, Key=name)["Body"].read()
        self.s3.put_object(Bucket=self.bucket, Key=name, Body=body[:500])

    def flip(self, key: str, index: int) -> None:
        name = self.chunk(key, index)
        body = bytearray(self.s3.get_object(Bucket=self.bucket, Key=name)["Body"].read())
        body[1000:1008] = bytes(b ^ 0xFF for b in body[1000:1008])
        self.s3.put_object(Bucket=self.bucket, Key=name, Body=bytes(body))


@pytest.fixture(params=["zarr-local", pytest.param("zarr-s3-moto", marks=pytest.mark.s3)])
def history(request, tmp_path) -> tuple[str, dict[str, Any], Any]:
    """(url, storage options, chunk damager) of an empty Zarr checkpoint store."""
    if request.param == "zarr-local":
        root = str(tmp_path / "z.zarr")
        return root, {}, LocalChunks(root)
    server = request.getfixturevalue("moto_server")
    prefix = f"integrity-{uuid.uuid4().hex[:8]}.zarr"
    return f"zarr+s3://expstore-test/{prefix}", server.storage_options, S3Chunks(server, "expstore-test", prefix)


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip"])
def test_a_damaged_chunk_is_reported_and_load_falls_back(history, damage):
    url, options, chunks = history
    with save_two(url, options) as manager:
        latest = "z_iter_000002.ckpt"
        getattr(chunks, damage)(latest, 3)

        assert manager.verify() == [manager.ref_for(latest)]
        with pytest.raises(CorruptData, match=r"array 'state/w'.*key 'z_iter_000002.ckpt'"):
            manager.store.read_tree(latest)
        with pytest.warns(RuntimeWarning, match=r"z_iter_000002.ckpt.*'state/w'"):
            loaded = manager.load_checkpoint()
        assert loaded["iteration"] == 1
        np.testing.assert_array_equal(loaded["state"]["w"], weights(1))
        # An array of the damaged tree that was not damaged still loads alone.
        assert manager.store.read_tree(latest, select=["state/b"])["state"]["b"].tolist() == [2, 2, 2]


def test_a_truncated_chunk_leaves_no_traceback_or_asyncio_noise(tmp_path):
    url = str(tmp_path / "z.zarr")
    save_two(url, {}).close()
    LocalChunks(url).truncate("z_iter_000002.ckpt", 3)
    code = (
        "import warnings; warnings.simplefilter('ignore'); from expstore.checkpointing import CheckpointManager;"
        f"print(CheckpointManager({url!r}, 'z').load_checkpoint()['iteration'])"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "1"), done.stderr
    assert "Task was destroyed" not in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_every_array_stores_its_crc32c_and_trees_without_it_still_read(tmp_path):
    root = tmp_path / "t.zarr"
    tree = {"a": np.arange(10, dtype=">i4"), "b": {"c": np.float64(2.5) * np.ones((3, 2))}, "s": np.array(7)}
    with open_store(root) as store:
        token = store.write_tree("k", tree)
    group = zarr.open_group(root, mode="r")
    for path in ("a", "b/c", "s"):
        assert isinstance(group[f"k/v-{token}/{path}"].attrs[CRC32C_ATTRIBUTE], int)

    for meta in root.joinpath("k", f"v-{token}").rglob("zarr.json"):  # as an older expstore wrote it
        doc = json.loads(meta.read_text())
        doc.get("attributes", {}).pop(CRC32C_ATTRIBUTE, None)
        meta.write_text(json.dumps(doc))
    with open_store(root) as store:
        back = store.read_tree("k")
    assert back["a"].dtype == np.dtype(">i4")
    np.testing.assert_array_equal(back["a"], tree["a"])
    np.testing.assert_array_equal(back["b"]["c"], tree["b"]["c"])


def test_a_damaged_bytes_value_is_corrupt_data(tmp_path):
    root = tmp_path / "b.zarr"
    with open_store(root) as store:
        store.write("notes", bytes(range(256)) * 40)
        (chunk,) = root.joinpath("notes").glob("v-*/c/0")
        data = bytearray(chunk.read_bytes())
        data[7] ^= 0x01
        chunk.write_bytes(bytes(data))
        with pytest.raises(CorruptData, match="checksum mismatch.*key 'notes'"):
            store.read("notes")
        chunk.write_bytes(bytes(data[:100]))
        with pytest.raises(CorruptData, match="cannot be decoded.*key 'notes'"):
            store.read("notes")


ODD_DTYPES = {
    "longdouble": np.arange(5, dtype=np.longdouble) / 3,
    "clongdouble": (np.arange(4) + 1j / 3).astype(np.clongdouble),
    "subarray field": np.array([((1.5, 2.5), 3), ((4.5, 5.5), -6)], dtype=[("a", "<f4", (2,)), ("b", ">i2")]),
    "padded struct": np.array([(1, 70000), (2, -5)], dtype=np.dtype([("a", "u1"), ("b", "<i4")], align=True)),
    "0-d longdouble": np.full((), 1 / 7, np.longdouble),
    "2-d longdouble": (np.arange(6, dtype=np.longdouble) / 7).reshape(2, 3)[:, ::2],
}


@pytest.mark.parametrize("name", ODD_DTYPES)
def test_dtypes_zarr_lacks_are_stored_as_raw_bytes_and_read_back_exactly(tmp_path, name):
    array = ODD_DTYPES[name]
    root = tmp_path / "odd.zarr"
    with open_store(root, chunks=(1,)) as store:  # a user's chunk shape does not fit the raw array
        token = store.write_tree("k", {"x": array, "plain": np.arange(3)})
        back = store.read_tree("k")["x"]
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == np.ascontiguousarray(array).tobytes()
    raw = zarr.open_group(root, mode="r")[f"k/v-{token}/x"]
    assert raw.dtype == np.uint8 and raw.shape == array.shape + (array.dtype.itemsize,)
    assert raw.attrs["expstore_raw_dtype"] == str(array.dtype)
