"""Torch leaves <-> stored arrays: bit-exact round trips, zero copy, safetensors interop, ties, devices."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from expstore.format.torch_tensors import (  # noqa: E402
    SAFETENSORS_DTYPES,
    TensorView,
    array_to_tensor,
    decode_torch_value,
    dtype_name,
    encode_torch_value,
    group_shared_tensors,
    is_torch_object,
    rebuild_shared_tensors,
    refusal_message,
    tensor_to_array,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental"),
    pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning"),
]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ALL_DTYPES = [getattr(torch, spec.torch_name) for spec in SAFETENSORS_DTYPES.values() if hasattr(torch, spec.torch_name)]


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A tensor of `dtype` filled with arbitrary bit patterns (NaNs and all), bools kept to 0/1."""
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    raw = torch.randint(0, 256, (*shape, dtype.itemsize), dtype=torch.uint8, generator=generator)
    return raw.view(dtype).reshape(shape)


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bytes, so NaN payloads compare equal bit for bit."""
    data = tensor.detach().contiguous()
    if data.is_complex():
        data = torch.view_as_real(data)
    if data.numel() == 0:
        return torch.empty(0, dtype=torch.uint8)
    return data.reshape(-1).view(torch.uint8)


def assert_same(restored: torch.Tensor, original: torch.Tensor) -> None:
    assert restored.dtype == original.dtype
    assert restored.shape == original.shape
    assert restored.device == original.device
    assert torch.equal(bits(restored), bits(original))


def round_trip(tensor: torch.Tensor, **kwargs) -> torch.Tensor:
    array, name, meta = tensor_to_array(tensor)
    json.dumps(meta)  # the meta is what a skeleton holds
    return array_to_tensor(array, name, meta, **kwargs)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(3, 5), (), (0,), (2, 0, 3), (7,)], ids=str)
def test_every_dtype_round_trips_bit_exact(dtype, shape):
    tensor = random_tensor(dtype, shape)
    assert_same(round_trip(tensor), tensor)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float8_e4m3fn, torch.complex128, torch.bool])
def test_non_contiguous_tensors_round_trip(dtype):
    base = random_tensor(dtype, (6, 8))
    for view in (base.t(), base[::2, 1::3], base[:, 3], base.unsqueeze(0).expand(2, 6, 8)):
        assert not view.is_contiguous()
        assert_same(round_trip(view), view)


def test_conjugate_and_negative_views_store_their_values():
    values = torch.randn(4, dtype=torch.complex64)
    assert values.conj().is_conj()
    assert torch.equal(round_trip(values.conj()), values.conj().resolve_conj())
    real = torch.randn(3)
    assert torch.equal(round_trip(real._neg_view()), -real)


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_contiguous_cpu_tensor_is_viewed_without_copy(dtype):
    tensor = random_tensor(dtype, (4, 6))
    array, name, _ = tensor_to_array(tensor)
    assert array.ctypes.data == tensor.data_ptr()
    restored = array_to_tensor(array, name, {"device": "cpu"})
    assert restored.data_ptr() == array.ctypes.data


def test_numpy_array_shares_memory_both_ways():
    tensor = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    array, name, meta = tensor_to_array(tensor)
    assert array.dtype == np.uint16
    array[0, 0] = torch.tensor(5.0, dtype=torch.bfloat16).view(torch.uint16).item()
    assert tensor[0, 0].item() == 5.0
    restored = array_to_tensor(array, name, meta)
    restored[1, 1] = 9
    assert tensor[1, 1].item() == 9.0


def test_read_only_array_is_copied_not_aliased():
    array = np.frombuffer(np.arange(4, dtype=np.float32).tobytes(), dtype=np.float32)
    assert not array.flags.writeable
    restored = array_to_tensor(array, "F32", {"device": "cpu"})
    restored += 1
    assert array.tolist() == [0.0, 1.0, 2.0, 3.0]


def test_parameter_and_requires_grad_come_back():
    parameter = torch.nn.Parameter(torch.randn(3, 2))
    restored = round_trip(parameter)
    assert isinstance(restored, torch.nn.Parameter) and restored.requires_grad
    assert torch.equal(restored, parameter)
    frozen = torch.nn.Parameter(torch.randn(2), requires_grad=False)
    assert isinstance(round_trip(frozen), torch.nn.Parameter) and not round_trip(frozen).requires_grad
    leaf = torch.randn(2, requires_grad=True)
    restored_leaf = round_trip(leaf)
    assert restored_leaf.requires_grad and not isinstance(restored_leaf, torch.nn.Parameter)


def test_state_dict_tensors_come_back_as_plain_tensors():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    for name, tensor in model.state_dict().items():
        array, dtype, meta = tensor_to_array(tensor)
        assert meta == {"device": "cpu"}, name
        restored = array_to_tensor(array, dtype, meta)
        assert type(restored) is torch.Tensor and not restored.requires_grad
        assert_same(restored, tensor)


def test_dtype_names_follow_safetensors():
    assert dtype_name(torch.bfloat16) == "BF16"
    assert dtype_name(torch.float8_e4m3fn) == "F8_E4M3"
    assert dtype_name(torch.float8_e5m2) == "F8_E5M2"
    assert dtype_name(torch.complex64) == "C64"
    assert dtype_name(torch.complex128) == "C128" and not SAFETENSORS_DTYPES["C128"].native
    # complex64 lies as F32 pairs: safetensors before 0.7 cannot open a file holding a C64 tensor
    assert SAFETENSORS_DTYPES["C64"].stored_as == "F32" and SAFETENSORS_DTYPES["C64"].complex_pairs
    for name, torch_dtype in safetensors_torch._TYPES.items():
        if torch_dtype is not None:
            assert dtype_name(torch_dtype) == name
            assert SAFETENSORS_DTYPES[name].native or name == "C64"


def test_unsupported_tensors_are_refused_with_their_reason():
    with pytest.raises(TypeError, match="dtype torch.qint8"):
        tensor_to_array(torch.quantize_per_tensor(torch.randn(2), 0.1, 0, torch.qint8))
    with pytest.raises(TypeError, match="to_dense"):
        tensor_to_array(torch.eye(2).to_sparse())
    with pytest.raises(TypeError, match="meta device"):
        tensor_to_array(torch.empty(2, device="meta"))
    with pytest.raises(TypeError, match="'X9' is unknown"):
        array_to_tensor(np.zeros(2), "X9", {})


def write_safetensors(path: Path, tensors: dict[str, tuple[np.ndarray, str]]) -> None:
    """A safetensors file written by hand from arrays and dtype names (the layout the format writes)."""
    header, blobs, offset = {}, [], 0
    for key, (array, name) in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[key] = {
            "dtype": SAFETENSORS_DTYPES[name].stored_as,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(blob)],
        }
        blobs.append(blob)
        offset += len(blob)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def test_safetensors_reads_what_the_arrays_and_names_lay_out(tmp_path):
    originals = {
        f"t_{str(dtype).removeprefix('torch.')}": random_tensor(dtype, (3, 4), seed=i) for i, dtype in enumerate(ALL_DTYPES)
    }
    originals["empty"] = torch.empty(0, 3, dtype=torch.bfloat16)
    originals["scalar"] = torch.tensor(1.5, dtype=torch.float8_e5m2)
    parts = {key: tensor_to_array(tensor) for key, tensor in originals.items()}
    write_safetensors(tmp_path / "x.safetensors", {key: (array, name) for key, (array, name, _) in parts.items()})
    loaded = safetensors_torch.load_file(tmp_path / "x.safetensors")
    for key, tensor in originals.items():
        name = parts[key][1]
        if SAFETENSORS_DTYPES[name].complex_pairs:
            assert_same(torch.view_as_complex(loaded[key]), tensor)
        elif name == "F4_E2M1_X2":
            assert torch.equal(loaded[key], tensor.view(torch.uint8))
        else:
            assert_same(loaded[key], tensor)


def test_safetensors_numpy_writer_agrees_for_numpy_dtypes(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    originals = {
        str(dtype): random_tensor(dtype, (5, 2))
        for dtype in (torch.float32, torch.float64, torch.int8, torch.uint16, torch.uint64, torch.bool, torch.int64)
    }
    arrays = {key: tensor_to_array(tensor)[0] for key, tensor in originals.items()}
    safetensors_numpy.save_file(arrays, tmp_path / "n.safetensors")
    loaded = safetensors_torch.load_file(tmp_path / "n.safetensors")
    for key, tensor in originals.items():
        assert_same(loaded[key], tensor)


def test_tied_weights_are_grouped_and_come_back_tied():
    model = torch.nn.Module()
    model.embedding = torch.nn.Embedding(10, 4)
    model.head = torch.nn.Linear(4, 10, bias=False)
    model.head.weight = model.embedding.weight
    model.other = torch.nn.Linear(4, 4)
    state = model.state_dict()
    groups = group_shared_tensors(state)
    assert len(groups) == 1
    group = groups[0]
    assert group.key == "embedding.weight" and set(group.views) == {"embedding.weight", "head.weight"}
    array, name, meta = tensor_to_array(group.flat)
    assert array.shape == (40,)
    views = {path: TensorView.from_json(json.loads(json.dumps(view.to_json()))) for path, view in group.views.items()}
    rebuilt = rebuild_shared_tensors(array_to_tensor(array.copy(), name, meta), views)
    assert torch.equal(rebuilt["embedding.weight"], state["embedding.weight"])
    rebuilt["head.weight"][0, 0] = 123.0
    assert rebuilt["embedding.weight"][0, 0].item() == 123.0
    fresh = torch.nn.Module()
    fresh.embedding = torch.nn.Embedding(10, 4)
    fresh.embedding.weight.data = rebuilt["embedding.weight"]
    assert fresh.embedding.weight[0, 0].item() == 123.0


def test_views_of_one_storage_store_only_the_span_they_cover():
    base = torch.arange(100, dtype=torch.float32)
    state = {
        "a": base[10:20],
        "b": base[15:30].reshape(3, 5),
        "c": base[10:30:2],
        "alone": torch.ones(3),
        "t": base[40:46].reshape(2, 3).t(),
    }
    groups = group_shared_tensors(state)
    assert len(groups) == 1
    group = groups[0]
    assert set(group.views) == {"a", "b", "c", "t"}
    assert group.flat.numel() == 36  # elements 10 .. 45
    rebuilt = rebuild_shared_tensors(group.flat.clone(), group.views)
    for path in group.views:
        assert torch.equal(rebuilt[path], state[path])
    rebuilt["a"][6] = -1.0
    assert rebuilt["b"][0, 1].item() == -1.0 and rebuilt["c"][3].item() == -1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 20), st.integers(1, 3)), min_size=2, max_size=5))
def test_any_slices_of_one_storage_regroup_and_stay_tied(slices):
    base = torch.arange(64, dtype=torch.float16)
    state = {f"v{i}": base[start : start + length * step : step] for i, (start, length, step) in enumerate(slices)}
    groups = group_shared_tensors(state)
    assert len(groups) == 1 and set(groups[0].views) == set(state)
    array, name, meta = tensor_to_array(groups[0].flat)
    rebuilt = rebuild_shared_tensors(array_to_tensor(array.copy(), name, meta), groups[0].views)
    for path, tensor in state.items():
        assert torch.equal(rebuilt[path], tensor)
    flat_start = min(t.storage_offset() for t in state.values())
    rebuilt_base = next(iter(rebuilt.values()))
    assert all(t.untyped_storage().data_ptr() == rebuilt_base.untyped_storage().data_ptr() for t in rebuilt.values())
    assert groups[0].flat.storage_offset() == flat_start


def test_tensors_of_different_dtypes_on_one_storage_are_not_grouped():
    base = torch.arange(8, dtype=torch.float32)
    assert group_shared_tensors({"f": base, "i": base.view(torch.int32), "x": 3}) == []


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(ALL_DTYPES),
    st.lists(st.integers(0, 4), min_size=0, max_size=3),
    st.booleans(),
    st.integers(0, 2**31),
)
def test_round_trip_of_any_shape_and_layout(dtype, shape, transpose, seed):
    tensor = random_tensor(dtype, tuple(shape), seed=seed)
    if transpose and tensor.dim() >= 2:
        tensor = tensor.transpose(0, -1)
    assert_same(round_trip(tensor), tensor)


@pytest.mark.parametrize(
    "map_location",
    ["cpu", torch.device("cpu"), {"cuda:0": "cpu"}, {"cuda:0": torch.device("cpu")}, lambda storage, location: storage],
    ids=["str", "device", "dict", "dict-device", "callable"],
)
def test_map_location_forms_bring_a_cuda_tensor_to_the_cpu(map_location):
    array, name, meta = tensor_to_array(torch.arange(6, dtype=torch.bfloat16).reshape(2, 3))
    restored = array_to_tensor(array, name, {**meta, "device": "cuda:0"}, map_location=map_location)
    assert restored.device == torch.device("cpu")
    assert restored.dtype == torch.bfloat16 and restored.shape == (2, 3)
    assert torch.equal(restored, torch.arange(6, dtype=torch.bfloat16).reshape(2, 3))


def test_callable_map_location_returning_none_restores_the_saved_device():
    seen = []
    array, name, meta = tensor_to_array(torch.ones(3))
    restored = array_to_tensor(array, name, meta, map_location=lambda storage, location: seen.append(location))
    assert seen == ["cpu"] and restored.device.type == "cpu"


def test_callable_map_location_keeps_offset_shape_and_stride():
    flat = torch.arange(10, dtype=torch.float32)
    array, name, meta = tensor_to_array(flat)
    restored = array_to_tensor(array, name, meta, map_location=lambda storage, location: storage.clone())
    assert torch.equal(restored, flat) and restored.data_ptr() != array.ctypes.data


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_a_saved_cuda_device_without_cuda_names_the_device():
    array, name, meta = tensor_to_array(torch.ones(2))
    with pytest.raises(RuntimeError, match=r"saved on device 'cuda:1'.*map_location='cpu'"):
        array_to_tensor(array, name, {**meta, "device": "cuda:1"})
    with pytest.raises(RuntimeError, match=r"mapped to device 'cuda:0'"):
        array_to_tensor(array, name, meta, map_location="cuda:0")


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float8_e4m3fn, torch.complex128])
def test_cuda_tensors_round_trip_through_a_host_copy(dtype):
    tensor = random_tensor(dtype, (4, 5)).to("cuda:0")
    array, name, meta = tensor_to_array(tensor)
    assert meta["device"] == "cuda:0" and isinstance(array, np.ndarray)
    assert_same(array_to_tensor(array, name, meta), tensor)
    assert array_to_tensor(array, name, meta, map_location="cpu").device.type == "cpu"


@pytest.mark.parametrize(
    "value",
    [torch.Size([2, 3]), torch.Size([]), torch.bfloat16, torch.float8_e5m2, torch.device("cpu"), torch.device("cuda", 1)],
    ids=str,
)
def test_torch_values_encode_to_json_and_back(value):
    node = json.loads(json.dumps(encode_torch_value(value)))
    decoded = decode_torch_value(node)
    assert decoded == value and type(decoded) is type(value)


def test_encoding_refuses_other_values():
    with pytest.raises(TypeError):
        encode_torch_value(torch.ones(1))
    with pytest.raises(TypeError, match="no dtype 'float99'"):
        decode_torch_value({"t": "torch.dtype", "v": "float99"})


def test_refusals_say_what_to_pass_instead():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    assert "model.state_dict()" in refusal_message(model)
    assert "torch.nn.modules.linear.Linear" in refusal_message(model)
    assert "optimizer.state_dict()" in refusal_message(optimizer)
    assert "scheduler.state_dict()" in refusal_message(scheduler)
    assert "scheduler.state_dict()" in refusal_message(torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer))
    assert "scaler.state_dict()" in refusal_message(torch.amp.GradScaler("cpu"))
    assert "generator.get_state()" in refusal_message(torch.Generator())
    assert "function" in refusal_message(lambda step: 1.0)
    assert refusal_message(model.state_dict()) is None
    assert refusal_message(torch.ones(2)) is None
    assert refusal_message(3) is None


def test_torch_objects_are_told_by_their_type_module():
    for value in (torch.ones(1), torch.nn.Parameter(torch.ones(1)), torch.Size([1]), torch.float32, torch.device("cpu")):
        assert is_torch_object(value), value
    for value in (np.ones(1), 1, "torch", {"torch": 1}):
        assert not is_torch_object(value), value


def test_a_dict_map_location_leaves_other_devices_as_saved():
    array, name, meta = tensor_to_array(torch.ones(2))
    assert array_to_tensor(array, name, meta, map_location={"cuda:1": "cuda:0"}).device == torch.device("cpu")


def test_importing_the_module_does_not_import_torch():
    code = "import sys, expstore.format.torch_tensors as t; print('torch' in sys.modules, t.is_torch_object(1))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
