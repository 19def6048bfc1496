"""CheckpointManager with PyTorch state: what a user of torch.save relies on, without pickle.

Plain safetensors readers open the checkpoint, tied weights cost one copy, local loads are
copy-on-write, `map_location` is torch.load's, refusals name the leaf and write nothing, async saves
copy tensors before returning, and damage falls back to the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from expstore import CorruptData, open_store
from expstore.checkpointing import CheckpointManager, resume_from_checkpoint
from expstore.format.checkpoint import read_manifest, write_flat
from expstore.format.tree import flatten

from ..workers import REPO_ROOT
from ..wrapping import DelegatingStore

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def _tied_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(64, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 64, bias=False))
    model[2].weight = model[0].weight
    return model


def test_safetensors_opens_the_checkpoint_with_bf16_and_fp8(tmp_path):
    state = {"w": torch.randn(4, 3).to(torch.bfloat16), "q": torch.randn(5).to(torch.float8_e5m2), "i": torch.arange(3)}
    with CheckpointManager(tmp_path, "e") as manager:
        ref = manager.save_checkpoint(state, 1)
    opened = safetensors_torch.load_file(ref)
    assert opened["w"].dtype == torch.bfloat16 and torch.equal(opened["w"], state["w"])
    assert opened["q"].dtype == torch.float8_e5m2 and torch.equal(opened["q"].view(torch.uint8), state["q"].view(torch.uint8))
    assert torch.equal(opened["i"], state["i"])


def test_tied_weights_are_stored_once_and_load_tied(tmp_path):
    model = _tied_model()
    with CheckpointManager(tmp_path, "e") as manager:
        ref = manager.save_checkpoint({"model": model.state_dict()}, 1)
        loaded = manager.load_checkpoint()["state"]["model"]
    weight_bytes = 64 * 16 * 4
    assert weight_bytes < os.path.getsize(ref) < 2 * weight_bytes
    assert loaded["0.weight"].data_ptr() == loaded["2.weight"].data_ptr()
    fresh = _tied_model()
    with torch.no_grad():
        fresh[0].weight.zero_()
    fresh.load_state_dict(loaded)
    assert torch.equal(fresh[2].weight, model[2].weight) and fresh[2].weight is fresh[0].weight
    opened = safetensors_torch.load_file(ref)  # the shared storage under the first name, in its shape
    assert torch.equal(opened["model/0.weight"], model[0].weight.detach()) and "model/2.weight" not in opened


def test_local_loads_are_writable_and_never_change_the_file(tmp_path):
    with CheckpointManager(tmp_path, "e") as manager:
        ref = manager.save_checkpoint({"w": torch.ones(1000)}, 1)
        before = open(ref, "rb").read()
        first = manager.load_checkpoint()["state"]["w"]
        second = manager.load_checkpoint()["state"]["w"]
    first += 1.0
    assert torch.equal(second, torch.ones(1000)) and torch.equal(first, torch.full((1000,), 2.0))
    assert open(ref, "rb").read() == before


def test_int_keyed_optimizer_state_loads_straight_back(tmp_path):
    model = _tied_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    with CheckpointManager(tmp_path, "e") as manager:
        manager.save_checkpoint({"optimizer": optimizer.state_dict()}, 1)
        back = manager.load_checkpoint()["state"]["optimizer"]
    assert list(back["state"]) == list(optimizer.state_dict()["state"]) and all(type(k) is int for k in back["state"])
    again = torch.optim.AdamW(_tied_model().parameters(), lr=0.5)
    again.load_state_dict(back)
    assert again.param_groups[0]["lr"] == 0.01
    assert torch.equal(again.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="shows what happens where CUDA is missing")
def test_a_cuda_checkpoint_loads_on_cpu_only_through_map_location(tmp_path):
    from expstore.format.torch_tensors import HostCopy

    store = open_store(str(tmp_path))
    skeleton, arrays = flatten({"w": HostCopy(torch.arange(4.0), "cuda:1", {"device": "cuda:1"})}, "state")
    write_flat(store, "gpu_iter_00000007.ckpt", skeleton, arrays, {"iteration": 7})  # as a GPU machine writes it
    ref = str(tmp_path / "gpu_iter_00000007.ckpt")
    with pytest.raises(RuntimeError, match=r"'cuda:1'.*map_location='cpu'"):
        resume_from_checkpoint(ref)
    for map_location in ("cpu", torch.device("cpu"), {"cuda:1": "cpu"}, lambda storage, location: storage):
        assert torch.equal(resume_from_checkpoint(ref, map_location=map_location)["state"]["w"], torch.arange(4.0))


@pytest.mark.parametrize(
    ("leaf", "named", "instead"),
    [
        (lambda: torch.nn.Linear(2, 2), "nn.Module", "model.state_dict()"),
        (lambda: torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1), "optimizer", "optimizer.state_dict()"),
        (lambda: (lambda epoch: 0.9**epoch), "function", "rebuild it in code"),
    ],
)
@pytest.mark.parametrize("blocking", [True, False])
def test_objects_that_need_pickle_are_refused_by_path_and_nothing_is_written(tmp_path, leaf, named, instead, blocking):
    with CheckpointManager(tmp_path, "e") as manager:
        with pytest.raises(TypeError, match=rf"state\['train'\]\['thing'\]: .*{named}.*{instead.replace('(', '[(]').replace(')', '[)]')}"):
            manager.save_checkpoint({"train": {"thing": leaf(), "w": torch.ones(2)}}, 1, blocking=blocking)  # async: at once
        assert manager.list_checkpoints() == []
    assert os.listdir(tmp_path) == []


def test_async_save_copies_tensors_before_returning(tmp_path):
    model = _tied_model()
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    with CheckpointManager(tmp_path, "e", async_save=True) as manager:
        manager.save_checkpoint({"model": model.state_dict()}, 1)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)  # the training step goes on while the save writes
        manager.wait_until_finished()
        loaded = manager.load_checkpoint()["state"]["model"]
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    assert loaded["0.weight"].data_ptr() == loaded["2.weight"].data_ptr()


def test_a_damaged_tensor_falls_back_to_the_previous_checkpoint(tmp_path):
    with CheckpointManager(tmp_path, "e", keep_last_n=None) as manager:
        manager.save_checkpoint({"w": torch.zeros(1000)}, 1)
        ref = manager.save_checkpoint({"w": torch.ones(1000)}, 2)
        with open(ref, "r+b") as f:
            f.seek(-100, os.SEEK_END)
            f.write(b"\xff" * 8)
        assert manager.verify() == [ref]
        with pytest.warns(RuntimeWarning, match="checksum mismatch in array 'w'"):
            loaded = manager.load_checkpoint()
    assert loaded["iteration"] == 1 and torch.equal(loaded["state"]["w"], torch.zeros(1000))


def test_a_tensor_view_past_its_storage_is_corrupt_data(tmp_path):
    store = open_store(str(tmp_path))
    emb = torch.ones(4, 4)
    skeleton, arrays = flatten({"a": emb, "b": emb[1]}, "state")
    skeleton["items"][1][1]["view"]["offset"] = 15  # a row of 4 from element 15 of 16
    write_flat(store, "bad_iter_00000001.ckpt", skeleton, arrays)
    with pytest.raises(CorruptData, match="reaches past its storage"):
        resume_from_checkpoint(str(tmp_path / "bad_iter_00000001.ckpt"))


class _CountingStore(DelegatingStore):
    """Counts the bytes asked for by range reads."""

    def __init__(self, inner):
        super().__init__(inner)
        self.range_bytes = 0

    def forward(self, operation, *args, **kwargs):
        if operation == "read_range":
            self.range_bytes += args[2] - args[1]
        return super().forward(operation, *args, **kwargs)


@pytest.mark.s3
def test_select_of_one_tensor_reads_only_its_bytes_from_s3(moto_server):
    inner = open_store("s3://expstore-test/torch-select", **moto_server.storage_options)
    state = {f"layer{i:03d}": torch.full((256, 64), float(i)) for i in range(200)}
    counting = _CountingStore(inner)
    with CheckpointManager(counting, "e") as manager:
        manager.save_checkpoint(state, 1)
        header = len(str(read_manifest(inner, manager.list_checkpoints()[0]["key"])))
        counting.range_bytes = 0
        got = manager.load_checkpoint(select=["layer042"])["state"]
    assert list(got) == ["layer042"] and torch.equal(got["layer042"], state["layer042"])
    assert counting.range_bytes < 256 * 64 * 4 + 4 * header  # the tensor and the header, not 200 tensors


def test_importing_and_saving_numpy_state_never_imports_torch(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from expstore.checkpointing import CheckpointManager\n"
        f"m = CheckpointManager({str(tmp_path)!r}, 'e')\n"
        "m.save_checkpoint({'w': np.ones(3)}, 1); m.load_checkpoint(); m.close()\n"
        "assert 'torch' not in sys.modules and 'ml_dtypes' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_hdf5_and_zarr_hold_tensors_as_datasets_of_their_bytes_with_a_dtype_attribute(tmp_path):
    h5py = pytest.importorskip("h5py")
    zarr = pytest.importorskip("zarr")
    state = {"w": torch.randn(3, 2).to(torch.bfloat16)}
    for url in (tmp_path / "run.h5", tmp_path / "run.zarr"):
        with CheckpointManager(url, "e") as manager:
            manager.save_checkpoint(state, 1)
            assert torch.equal(manager.load_checkpoint()["state"]["w"], state["w"])
    with h5py.File(tmp_path / "run.h5", "r") as f:
        found = []
        f.visititems(lambda name, obj: found.append(obj) if name.endswith("state/w") else None)
        assert found[0].dtype == np.uint16 and found[0].shape == (3, 2) and found[0].attrs["expstore_dtype"] == "BF16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = [a for a in _all_arrays(zarr.open_group(tmp_path / "run.zarr", mode="r")) if a.path.endswith("state/w")]
    assert found[0].dtype == np.uint16 and found[0].attrs["expstore_dtype"] == "BF16"


def _all_arrays(group):
    """Every array below a zarr group."""
    for _, member in group.members(max_depth=None):
        if hasattr(member, "dtype"):
            yield member


def test_sharded_checkpoints_hold_tensors_and_reshard_tensor_rows():
    from expstore.checkpointing import ShardedArray

    weights = torch.randn(6, 3).to(torch.bfloat16)
    phases = torch.randn(6, dtype=torch.complex64)
    managers = [CheckpointManager("memory://torch-sharded", "e", keep_last_n=None, rank=r, world_size=3) for r in range(3)]
    for rank, manager in enumerate(managers):
        rows = slice(2 * rank, 2 * rank + 2)
        manager.save_checkpoint({"w": ShardedArray(weights[rows], (6, 3), 2 * rank), "z": ShardedArray(phases[rows], (6,), 2 * rank),
                                 "local": torch.full((2,), float(rank)), "opt": {0: torch.ones(1)}}, 1)
    for rank, manager in enumerate(managers):
        state = manager.load_checkpoint(rank=rank)["state"]
        assert torch.equal(state["local"], torch.full((2,), float(rank))) and list(state["opt"]) == [0]
        assert state["w"].global_shape == (6, 3) and torch.equal(state["w"].local, weights[2 * rank : 2 * rank + 2])
    reader = CheckpointManager("memory://torch-sharded", "e", keep_last_n=None)
    for rank in range(2):  # saved by 3 ranks, loaded by 2: rows regrouped, still bfloat16 / complex tensors
        state = reader.load_checkpoint(rank=rank, world_size=2)["state"]
        assert state["w"].offset == 3 * rank and state["w"].local.dtype == torch.bfloat16
        assert torch.equal(state["w"].local, weights[3 * rank : 3 * rank + 3])
        assert state["z"].global_shape == (6,) and torch.equal(state["z"].local, phases[3 * rank : 3 * rank + 3])


def _rewrite_manifest(path, change) -> None:
    """Rewrite the manifest in the header of the checkpoint file at `path` as a crafted file would hold it."""
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    manifest = json.loads(header["__metadata__"]["expstore"])
    change(manifest["tree"]["items"][0][1])
    header["__metadata__"]["expstore"] = json.dumps(manifest)
    text = json.dumps(header).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + raw[8 + n :])


@pytest.mark.parametrize(
    ("node_change", "needle"),
    [
        (lambda node: node.update(dtype="X9"), "X9"),
        (lambda node: node.update(dtype="BF16"), "BF16"),  # an F32 tensor's bytes named bfloat16
        (lambda node: node.update(t="ml_array", dtype="no_such_type"), "no_such_type"),
        (lambda node: node.update(storage="w", view={"offset": 0}), "shape"),
        (lambda node: node.update(storage="w", view={"offset": 1, "shape": [2], "stride": [1]}), "reaches past"),
    ],
)
def test_a_crafted_typed_node_is_corrupt_data_naming_it_and_the_previous_checkpoint_loads(tmp_path, node_change, needle):
    with CheckpointManager(tmp_path, "e", keep_last_n=None) as manager:
        manager.save_checkpoint({"w": torch.ones(2)}, 1)
        ref = manager.save_checkpoint({"w": torch.zeros(2)}, 2)
        _rewrite_manifest(ref, node_change)
        with pytest.raises(CorruptData, match=needle):
            resume_from_checkpoint(ref)
        with pytest.warns(RuntimeWarning, match="skipping unreadable checkpoint"):
            assert torch.equal(manager.load_checkpoint()["state"]["w"], torch.ones(2))
