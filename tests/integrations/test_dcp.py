"""torch.distributed.checkpoint through expstore: StoreWriter / StoreReader with real gloo ranks (spawned
processes, DTensor shards, resharding on load), on a local folder and on SeaweedFS; commits, refusals,
checksums and crash safety."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

from torch.distributed.checkpoint.api import CheckpointException  # noqa: E402

from expstore.cli import main as expstore_cli  # noqa: E402
from expstore.errors import CorruptData  # noqa: E402
from expstore.integrations.dcp import (  # noqa: E402
    DATA_PREFIX,
    METADATA_KEY,
    CheckpointNotFound,
    StoreReader,
    StoreWriter,
    delete_dcp_checkpoint,
    read_dcp_metadata,
    verify_dcp_checkpoint,
)
from expstore.integrations.dcp.__main__ import main as dcp_cli  # noqa: E402
from expstore.integrations.dcp.layout import encode_metadata_object  # noqa: E402
from expstore.store import open_store  # noqa: E402

from ..conftest import unique  # noqa: E402
from ..workers import REPO_ROOT  # noqa: E402
from ..workers.dcp_workers import full_state  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning")


def run_ranks(*steps: tuple[str, int, dict[str, Any]], expect_ok: bool = True) -> subprocess.CompletedProcess:
    """Run `tests.workers.dcp_workers` with these (scenario, world size, args) steps; fail showing its stderr."""
    done = subprocess.run([sys.executable, "-m", "tests.workers.dcp_workers", json.dumps(steps)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    if expect_ok:
        assert done.returncode == 0, done.stderr[-8000:]
    return done


def state() -> dict[str, Any]:
    """A single-process state of many dtypes and shapes (views, 0-d, empty) and a non-tensor value."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "w": torch.randn(5, 3), "bf16": torch.randn(7).to(torch.bfloat16), "half": torch.randn(2, 2).half(),
        "mask": torch.tensor([True, False, True]), "c": torch.randn(3, dtype=torch.complex64),
        "f8": torch.randn(4).to(torch.float8_e4m3fn), "u8": torch.arange(9, dtype=torch.uint8),
        "scalar": torch.tensor(2.5), "empty": torch.empty(0, 4), "strided": base.t(), "rows": base[1:3],
        "nested": {"i64": torch.arange(5)}, "step": 11,
    }


def blank(reference: dict[str, Any]) -> dict[str, Any]:
    """A load target of the same layout as `reference`, every tensor zero and the step 0."""
    out: dict[str, Any] = {}
    for name, value in reference.items():
        if isinstance(value, dict):
            out[name] = blank(value)
        elif isinstance(value, torch.Tensor):
            out[name] = torch.zeros(value.shape, dtype=value.dtype)
        else:
            out[name] = 0
    return out


def assert_same(loaded: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        if isinstance(value, dict):
            assert_same(loaded[name], value)
        elif isinstance(value, torch.Tensor):
            got = loaded[name]
            assert got.dtype == value.dtype and got.shape == value.shape, name
            assert torch.equal(got.reshape(-1).view(torch.uint8), value.reshape(-1).view(torch.uint8)), name  # bits, NaN too
        else:
            assert loaded[name] == value, name


# ---- real ranks ---------------------------------------------------------------------------------------


def test_four_ranks_save_dtensor_shards_and_fsdp2_locally_two_ranks_load_them_and_a_second_save_is_refused(tmp_path):
    url = str(tmp_path / "step-100")
    args = {"url": url, "fsdp_url": str(tmp_path / "fsdp"), "async_url": str(tmp_path / "async"), "options": {}}
    run_ranks(("save", 4, args), ("load", 2, args))
    assert verify_dcp_checkpoint(tmp_path / "fsdp")["objects"] == 4
    expected = full_state()  # the async save, loaded whole by one process without a process group
    loaded = blank(expected)
    dcp.load(loaded, storage_reader=StoreReader(tmp_path / "async"))
    assert_same(loaded, expected)
    store = open_store(url)
    assert len(store.list(DATA_PREFIX)) == 4  # one object per rank; the refused second save left nothing
    summary = verify_dcp_checkpoint(url)
    assert summary["objects"] == 4 and summary["leftovers"] == []
    metadata = read_dcp_metadata(store)
    assert [c.sizes[0] for c in metadata.state_dict_metadata["model.w"].chunks] == [3, 3, 3, 1]  # uneven shards


def test_two_ranks_save_to_seaweedfs_and_four_ranks_load_with_resharding(seaweedfs_server):
    url, options = f"s3://expstore-test/dcp-{unique()}/step-1", seaweedfs_server.storage_options
    args = {"url": url, "fsdp_url": f"{url}-fsdp", "options": options}
    run_ranks(("save", 2, args), ("load", 4, args))
    summary = verify_dcp_checkpoint(url, **options)
    assert summary["objects"] == 2 and summary["leftovers"] == []


@pytest.mark.parametrize("where, die_rank, how", [("local", 1, "sigkill"), ("seaweedfs", 0, "exit")])
def test_a_rank_killed_mid_save_leaves_no_committed_checkpoint(request, tmp_path, where, die_rank, how):
    if where == "local":
        url, options = str(tmp_path / "ckpt"), {}
    else:
        url, options = f"s3://expstore-test/dcp-{unique()}/ckpt", request.getfixturevalue("seaweedfs_server").storage_options
    done = run_ranks(("die", 2, {"url": url, "options": options, "die_rank": die_rank, "how": how}), expect_ok=False)
    assert done.returncode != 0 and ("SIGKILL" in done.stderr or "exit code 3" in done.stderr), done.stderr[-3000:]
    store = open_store(url, **options)
    assert store.list(DATA_PREFIX) and not store.exists(METADATA_KEY)  # data was written, nothing committed
    with pytest.raises(CheckpointNotFound, match="metadata object is missing") as raised:
        StoreReader(url, **options).read_metadata()
    assert url.rstrip("/").split("/")[-1] in str(raised.value)
    with pytest.raises(CheckpointException, match="no committed DCP checkpoint"):
        dcp.load({"step": 0}, storage_reader=StoreReader(url, **options))
    saved = state()  # a new save to the same URL commits and removes what the dead save left
    dcp.save(saved, storage_writer=StoreWriter(url, **options))
    assert verify_dcp_checkpoint(url, **options)["leftovers"] == []
    assert len(store.list(DATA_PREFIX)) == 1
    loaded = blank(saved)
    dcp.load(loaded, storage_reader=StoreReader(url, **options))
    assert_same(loaded, saved)


# ---- one process (DCP without a process group) --------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory", "hdf5", "zarr"])
def test_every_dtype_and_layout_round_trips_bit_for_bit(tmp_path, where):
    url = {"local": str(tmp_path / "c"), "memory": f"memory://dcp-{unique()}", "hdf5": str(tmp_path / "run.h5" / "step-1"),
           "zarr": str(tmp_path / "run.zarr" / "step-1")}[where]
    saved = state()
    dcp.save(saved, storage_writer=StoreWriter(url))
    loaded = blank(saved)
    dcp.load(loaded, storage_reader=StoreReader(url))
    assert_same(loaded, saved)


def test_metadata_is_json_and_data_objects_hold_the_raw_tensor_bytes(tmp_path):
    url = tmp_path / "c"  # a pathlib.Path is a checkpoint id too
    saved = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "step": 3}
    dcp.save(saved, storage_writer=StoreWriter(url))
    store = open_store(url)
    document = json.loads(store.read(METADATA_KEY))  # plain JSON, no pickle
    assert document["format"] == "expstore-dcp" and document["metadata"]["state_dict"]["w"]["dtype"] == "float32"
    (entry,) = [e for e in document["metadata"]["storage_data"] if e["index"]["fqn"] == "w"]
    item = entry["item"]
    raw = store.read_range(item["key"], item["offset"], item["offset"] + item["length"])
    assert raw == saved["w"].numpy().tobytes() and item["shape"] == [2, 3]
    metadata = read_dcp_metadata(store)
    assert metadata.planner_data == {"w": ("w",), "step": ("step",)}  # tuples come back as tuples
    assert metadata.storage_meta.checkpoint_id == str(url)


def test_a_second_save_to_a_committed_url_is_refused_until_the_checkpoint_is_deleted(tmp_path):
    url = str(tmp_path / "c")
    dcp.save({"w": torch.ones(3)}, storage_writer=StoreWriter(url))
    with pytest.raises(CheckpointException, match="already committed") as raised:
        dcp.save({"w": torch.zeros(3)}, storage_writer=StoreWriter(url))
    assert str(tmp_path / "c") in str(raised.value)
    loaded = {"w": torch.zeros(3)}
    dcp.load(loaded, storage_reader=StoreReader(url))
    assert torch.equal(loaded["w"], torch.ones(3))  # nothing of the first one was touched
    removed = delete_dcp_checkpoint(url)
    assert removed[0] == METADATA_KEY and len(removed) == 2
    with pytest.raises(CheckpointNotFound):
        delete_dcp_checkpoint(url)
    dcp.save({"w": torch.zeros(3)}, storage_writer=StoreWriter(url))
    dcp.load(loaded, storage_reader=StoreReader(url))
    assert torch.equal(loaded["w"], torch.zeros(3))


class RacingWriter(StoreWriter):
    """Lets another save commit at the same URL after its own existence check and before its own commit."""

    def prepare_global_plan(self, plans: list[Any]) -> list[Any]:
        plans = super().prepare_global_plan(plans)
        dcp.save({"w": torch.full((3,), 7.0)}, storage_writer=StoreWriter(self.url))
        return plans


def test_of_two_saves_racing_to_one_url_exactly_one_commits(tmp_path):
    url = str(tmp_path / "c")
    with pytest.raises(CheckpointException, match="already committed"):
        dcp.save({"w": torch.zeros(3)}, storage_writer=RacingWriter(url))
    loaded = {"w": torch.zeros(3)}
    dcp.load(loaded, storage_reader=StoreReader(url))
    assert torch.equal(loaded["w"], torch.full((3,), 7.0))
    assert len(verify_dcp_checkpoint(url)["leftovers"]) == 1  # the loser's data object, never named


def test_a_store_without_conditional_writes_is_refused_before_any_rank_writes():
    url = f"conformancefs://dcp-{unique()}"  # the generic fsspec store: no conditional writes
    with pytest.raises(CheckpointException, match="conditional write"):
        dcp.save({"w": torch.ones(2)}, storage_writer=StoreWriter(url))
    assert open_store(url).list() == []


def test_checkpoint_id_given_to_save_redirects_the_writer(tmp_path):
    writer = StoreWriter(tmp_path / "a")
    dcp.save({"w": torch.ones(2)}, checkpoint_id=str(tmp_path / "b"), storage_writer=writer)
    assert open_store(tmp_path / "b").exists(METADATA_KEY) and not (tmp_path / "a").exists()
    loaded = {"w": torch.zeros(2)}
    dcp.load(loaded, checkpoint_id=str(tmp_path / "b"), storage_reader=StoreReader(tmp_path / "a"))
    assert torch.equal(loaded["w"], torch.ones(2))


def test_a_flipped_byte_in_a_data_object_is_refused_naming_the_object(tmp_path):
    url = str(tmp_path / "c")
    dcp.save({"w": torch.arange(8.0), "v": torch.ones(2)}, storage_writer=StoreWriter(url))
    store = open_store(url)
    (key,) = store.list(DATA_PREFIX)
    damaged = bytearray(store.read(key))
    damaged[3] ^= 0x40
    store.write(key, bytes(damaged))
    with pytest.raises(CheckpointException, match="checksum mismatch in DCP entry") as raised:
        dcp.load({"w": torch.zeros(8), "v": torch.zeros(2)}, storage_reader=StoreReader(url))
    assert key in str(raised.value)
    with pytest.raises(CorruptData, match="checksum mismatch") as raised:
        verify_dcp_checkpoint(url)
    assert raised.value.key == key
    store.write(key, bytes(damaged[:-1]))  # truncated
    with pytest.raises(CorruptData) as raised:
        verify_dcp_checkpoint(url)
    assert raised.value.key == key


@pytest.mark.parametrize("damage", [b"{not json", b'{"format": "other"}', "edit"])
def test_a_damaged_metadata_object_is_refused(tmp_path, damage):
    url = str(tmp_path / "c")
    dcp.save({"w": torch.ones(2)}, storage_writer=StoreWriter(url))
    store = open_store(url)
    if damage == "edit":  # still valid JSON, a changed value: only the checksum sees it
        damage = store.read(METADATA_KEY).replace(b'"float32"', b'"float64"')
    store.write(METADATA_KEY, damage)
    with pytest.raises(CorruptData) as raised:
        StoreReader(url).read_metadata()
    assert raised.value.key == METADATA_KEY


@pytest.mark.parametrize("edit", ["key outside", "length"])
def test_metadata_that_checks_out_but_names_a_foreign_key_or_a_wrong_length_is_refused(tmp_path, edit):
    url = str(tmp_path / "c")
    dcp.save({"w": torch.ones(4)}, storage_writer=StoreWriter(url))
    store = open_store(url)
    metadata = json.loads(store.read(METADATA_KEY))["metadata"]
    (entry,) = metadata["storage_data"]
    if edit == "key outside":
        entry["item"]["key"] = METADATA_KEY
    else:
        entry["item"]["length"] = 2**40  # would be a huge read
    store.write(METADATA_KEY, encode_metadata_object(metadata))  # a valid checksum over the edit
    with pytest.raises(CorruptData, match="not a data object" if edit == "key outside" else "bytes stored") as raised:
        StoreReader(url).read_metadata()
    assert raised.value.key == METADATA_KEY


class Opaque:
    """A value that only a full unpickler restores."""

    def __init__(self, n: int) -> None:
        self.n = n


def test_non_tensor_values_that_need_a_full_unpickler_load_only_with_allow_pickle(tmp_path):
    url = str(tmp_path / "c")
    dcp.save({"w": torch.ones(2), "extra": Opaque(4), "lr": 0.1}, storage_writer=StoreWriter(url))
    with pytest.raises(CheckpointException, match="'extra'.*allow_pickle=True") as raised:
        dcp.load({"w": torch.zeros(2), "extra": None, "lr": 0.0}, storage_reader=StoreReader(url))
    assert "PickleNotAllowed" in str(raised.value)
    loaded = {"w": torch.zeros(2), "extra": None, "lr": 0.0}
    dcp.load(loaded, storage_reader=StoreReader(url, allow_pickle=True))
    assert loaded["extra"].n == 4 and loaded["lr"] == 0.1
    plain = {"w": torch.zeros(2), "lr": 0.0}  # floats, ints, strings pass torch.load(weights_only=True)
    dcp.load(plain, storage_reader=StoreReader(url))
    assert plain["lr"] == 0.1


def test_validate_checkpoint_id_accepts_paths_and_urls_expstore_opens(tmp_path):
    for good in ("s3://bucket/run/step-1", "memory://x", str(tmp_path / "c"), tmp_path / "c", "file:///tmp/c"):
        assert StoreWriter.validate_checkpoint_id(good) and StoreReader.validate_checkpoint_id(good), good
    for bad in ("nosuchscheme://x/y", "", 42, None):
        assert not StoreWriter.validate_checkpoint_id(bad) and not StoreReader.validate_checkpoint_id(bad), bad


def test_bad_arguments_raise_naming_them(tmp_path):
    with pytest.raises(ValueError, match="non-empty URL or path"):
        StoreWriter("")
    with pytest.raises(TypeError, match="int"):
        StoreReader(42)
    with pytest.raises(ValueError, match="use_collectives=True"):  # raised as is: no collective wraps it
        dcp.save({"w": torch.ones(1)}, storage_writer=StoreWriter(tmp_path / "c"), use_collectives=False)
    with pytest.raises(CheckpointNotFound, match="no committed DCP checkpoint") as raised:
        verify_dcp_checkpoint(tmp_path / "nothing")
    assert raised.value.url == str(tmp_path / "nothing")


def test_importing_expstore_and_its_integrations_does_not_import_torch():
    code = ("import sys, expstore, expstore.integrations\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_the_cli_names_the_dcp_commit_object_as_the_adapter_does():
    from expstore.cli.layout import DCP_COMMIT

    assert DCP_COMMIT == METADATA_KEY


def test_the_expstore_cli_leaves_dcp_checkpoints_alone_and_the_module_cli_verifies_them(tmp_path, capsys):
    url = str(tmp_path / "c")
    dcp.save({"w": torch.ones(2)}, storage_writer=StoreWriter(url))
    before = sorted(open_store(url).list())
    for command in ("verify", "gc", "ls"):
        assert expstore_cli([command, url]) == 2
        err = capsys.readouterr().err
        assert "torch.distributed.checkpoint" in err and "python -m expstore.integrations.dcp verify" in err
    assert sorted(open_store(url).list()) == before
    assert dcp_cli(["verify", url]) == 0
    assert json.loads(capsys.readouterr().out)["objects"] == 1
    store = open_store(url)
    (key,) = store.list(DATA_PREFIX)
    store.write(key, store.read(key)[:-1] + bytes([store.read(key)[-1] ^ 1]))
    assert dcp_cli(["verify", url]) == 1
    err = capsys.readouterr().err
    assert "CorruptData" in err and key in err
    assert dcp_cli(["delete", url]) == 0 and not open_store(url).list()
    assert dcp_cli(["verify", url]) == 1 and "CheckpointNotFound" in capsys.readouterr().err
