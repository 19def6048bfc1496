"""Torch tensors, ml_dtypes arrays and int dict keys through write_tree / read_tree, the same on every store:
exact bytes and dtypes back, tied tensors tied again, `select=` of one tensor, `map_location`."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")


def _tensor_tree() -> dict:
    generator = torch.Generator().manual_seed(0)
    emb = torch.randn(12, 4, generator=generator)
    return {
        "model": {
            "emb.weight": emb,
            "head.weight": emb,  # tied: one storage
            "row": emb[3],  # a view into it
            "bf16": torch.randn(3, 5, generator=generator).to(torch.bfloat16),
            "fp8": torch.randn(7, generator=generator).to(torch.float8_e4m3fn),
            "half": torch.randn(2, 2, generator=generator).half().t(),  # not contiguous
            "c64": torch.randn(3, dtype=torch.complex64, generator=generator),
            "c128": torch.randn(2, dtype=torch.complex128, generator=generator),
            "flags": torch.tensor([True, False, True]),
            "u32": torch.tensor([0, 1, 2**32 - 1], dtype=torch.int64).to(torch.uint32),
            "scalar": torch.tensor(2.5),
            "empty": torch.empty(0, 3),
        },
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}, 1: {"step": torch.tensor(4.0)}}, "param_groups": [{"params": [0, 1]}]},
        "mixed_keys": {0: "int zero", "0": "str zero", -1: "minus one"},
        "shape": torch.Size([2, 3]),
        "dtype": torch.bfloat16,
        "device": torch.device("cpu"),
        "ml": {"bf16": np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16), "e4m3": np.ones(3, ml_dtypes.float8_e4m3fn),
               "int4": np.array([-8, 7, 0], dtype=ml_dtypes.int4), "scalar": ml_dtypes.bfloat16(1.5)},
    }


def _assert_tensor_same(back, original) -> None:
    assert type(back) is type(original) and back.dtype == original.dtype and back.shape == original.shape
    assert torch.equal(back.view(torch.uint8) if back.dtype == torch.float8_e4m3fn else back,
                       original.view(torch.uint8) if original.dtype == torch.float8_e4m3fn else original)


def test_torch_state_round_trips_exactly(store):
    tree = _tensor_tree()
    store.write_tree("ckpt", tree)
    back = store.read_tree("ckpt")
    for name, tensor in tree["model"].items():
        _assert_tensor_same(back["model"][name], tensor)
    assert list(back["optimizer"]["state"]) == [0, 1] and back["optimizer"]["state"][1]["step"].item() == 4.0
    assert back["mixed_keys"] == {0: "int zero", "0": "str zero", -1: "minus one"}
    assert type(back["shape"]) is torch.Size and back["shape"] == torch.Size([2, 3])
    assert back["dtype"] is torch.bfloat16 and back["device"] == torch.device("cpu")
    for name, array in tree["ml"].items():
        assert back["ml"][name].dtype == np.asarray(array).dtype
        assert np.asarray(back["ml"][name]).tobytes() == np.asarray(array).tobytes()
    assert isinstance(back["ml"]["scalar"], ml_dtypes.bfloat16)


def test_tied_tensors_come_back_sharing_one_storage(store):
    store.write_tree("ckpt", _tensor_tree())
    model = store.read_tree("ckpt")["model"]
    assert model["emb.weight"].data_ptr() == model["head.weight"].data_ptr()
    model["head.weight"][3, 0] = 42.0
    assert model["emb.weight"][3, 0].item() == 42.0 and model["row"][0].item() == 42.0


def test_select_of_one_tensor_reads_it_and_leaves_the_others_out(store):
    store.write_tree("ckpt", _tensor_tree())
    back = store.read_tree("ckpt", select=["model/bf16"])
    assert list(back["model"]) == ["bf16"] and back["model"]["bf16"].dtype == torch.bfloat16
    tied = store.read_tree("ckpt", select=["model/head.weight"])["model"]
    assert set(tied) == {"emb.weight", "head.weight", "row"}  # one storage: its tensors come together
    with pytest.raises(KeyError, match="model/nope"):
        store.read_tree("ckpt", select=["model/nope"])


@pytest.mark.parametrize("map_location", ["cpu", "cpu:0", {"cpu": "cpu"}, lambda storage, location: storage])
def test_map_location_takes_what_torch_load_takes(store, map_location):
    store.write_tree("ckpt", {"w": torch.ones(3)})
    back = store.read_tree("ckpt", map_location=map_location if map_location != "cpu:0" else torch.device("cpu"))
    assert back["w"].device.type == "cpu" and torch.equal(back["w"], torch.ones(3))


def test_writing_to_a_loaded_tensor_never_changes_what_is_stored(store):
    store.write_tree("ckpt", {"w": torch.zeros(3), "tied": {"a": torch.zeros(2, 2)}})
    first = store.read_tree("ckpt")
    first["w"] += 1.0
    first["tied"]["a"][0, 0] = 5.0
    again = store.read_tree("ckpt")
    assert torch.equal(again["w"], torch.zeros(3)) and torch.equal(again["tied"]["a"], torch.zeros(2, 2))
