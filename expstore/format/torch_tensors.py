"""Pure conversion between PyTorch state leaves and what the checkpoint format stores.

A tensor becomes a numpy array of its bytes plus a dtype name of the safetensors layout, so the
format writes it without pickle; torch is imported only once a leaf is a torch object.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "SAFETENSORS_DTYPES",
    "HostCopy",
    "MapLocation",
    "SharedStorage",
    "TensorDtype",
    "TensorView",
    "array_to_tensor",
    "decode_torch_value",
    "dtype_name",
    "encode_torch_value",
    "group_shared_tensors",
    "is_torch_object",
    "rebuild_shared_tensors",
    "refusal_message",
    "tensor_meta",
    "tensor_to_array",
    "with_grad",
]

MapLocation = Any  # None, str, torch.device, {saved: mapped}, or callable(storage, location) like torch.load's


@dataclass(frozen=True)
class TensorDtype:
    """How one torch dtype is stored: the name recorded, the safetensors dtype the bytes are laid out as,
    the numpy dtype of the array holding them, and whether complex values sit as (real, imag) pairs."""

    name: str
    torch_name: str
    stored_as: str
    numpy_dtype: str
    complex_pairs: bool = False

    @property
    def native(self) -> bool:
        """True when safetensors knows this dtype under `name` itself."""
        return self.stored_as == self.name


def _dtype_table(*rows: tuple[str, str, str, str, bool]) -> dict[str, TensorDtype]:
    return {row[0]: TensorDtype(*row) for row in rows}


# Names as the safetensors format spells them (Rust `Dtype`, `safetensors/torch.py` `_TYPES`). Dtypes numpy
# lacks are held in unsigned ints of the same width. The rows whose `stored_as` differs from their name are
# expstore dtype notes: complex128 / complex32 lie as F64 / F16 (real, imag) pairs on a trailing axis of 2,
# and float4_e2m1fn_x2 (two 4-bit values per byte) lies as U8 bytes of the same shape. complex64 lies as F32
# pairs too: safetensors reads "C64" only since 0.7, and a dtype a reader does not know makes the whole file unreadable.
SAFETENSORS_DTYPES: dict[str, TensorDtype] = _dtype_table(
    ("F64", "float64", "F64", "float64", False),
    ("F32", "float32", "F32", "float32", False),
    ("F16", "float16", "F16", "float16", False),
    ("BF16", "bfloat16", "BF16", "uint16", False),
    ("F8_E4M3", "float8_e4m3fn", "F8_E4M3", "uint8", False),
    ("F8_E5M2", "float8_e5m2", "F8_E5M2", "uint8", False),
    ("F8_E4M3FNUZ", "float8_e4m3fnuz", "F8_E4M3FNUZ", "uint8", False),
    ("F8_E5M2FNUZ", "float8_e5m2fnuz", "F8_E5M2FNUZ", "uint8", False),
    ("F8_E8M0", "float8_e8m0fnu", "F8_E8M0", "uint8", False),
    ("I64", "int64", "I64", "int64", False),
    ("I32", "int32", "I32", "int32", False),
    ("I16", "int16", "I16", "int16", False),
    ("I8", "int8", "I8", "int8", False),
    ("U64", "uint64", "U64", "uint64", False),
    ("U32", "uint32", "U32", "uint32", False),
    ("U16", "uint16", "U16", "uint16", False),
    ("U8", "uint8", "U8", "uint8", False),
    ("BOOL", "bool", "BOOL", "bool", False),
    ("C64", "complex64", "F32", "float32", True),
    ("C128", "complex128", "F64", "float64", True),
    ("C32", "complex32", "F16", "float16", True),
    ("F4_E2M1_X2", "float4_e2m1fn_x2", "U8", "uint8", False),
)

# The torch dtype that carries the bytes of a dtype numpy lacks into numpy: torch before 2.3 has no uint16.
_BYTE_CARRIERS = {"uint8": "uint8", "uint16": "int16"}

_BY_TORCH_NAME = {spec.torch_name: spec for spec in SAFETENSORS_DTYPES.values()}


def is_torch_object(obj: Any) -> bool:
    """True when `obj` comes from torch, told by its type's module so that torch is never imported here."""
    return "torch" in sys.modules and type(obj).__module__.split(".", 1)[0] == "torch"


def _torch() -> Any:
    import torch

    return torch


def _spec_of(dtype: torch.dtype) -> TensorDtype:
    torch_name = str(dtype).removeprefix("torch.")
    spec = _BY_TORCH_NAME.get(torch_name)
    if spec is None:
        raise TypeError(f"cannot store a tensor of dtype torch.{torch_name}: the checkpoint format has no name for it")
    return spec


def dtype_name(dtype: torch.dtype) -> str:
    """The name a tensor of `dtype` is recorded under (`torch.bfloat16` -> `"BF16"`)."""
    return _spec_of(dtype).name


def _torch_dtype(name: str) -> torch.dtype:
    spec = SAFETENSORS_DTYPES.get(name)
    found = getattr(_torch(), spec.torch_name, None) if spec is not None else None
    if found is None:
        raise TypeError(f"tensor dtype {name!r} is unknown to this torch {_torch().__version__}")
    return found


def tensor_to_array(tensor: torch.Tensor) -> tuple[np.ndarray, str, dict[str, Any]]:
    """`(array, dtype name, meta)` of a tensor: a numpy view of its bytes, with no copy for a contiguous CPU
    tensor, a contiguous copy otherwise (a host copy off the CPU). `meta` holds the device, and for a
    `Parameter` or a tensor that requires grad, what restores that."""
    torch = _torch()
    if tensor.layout != torch.strided:
        raise TypeError(f"cannot store a {tensor.layout} tensor: only dense (strided) tensors; call .to_dense() first")
    if tensor.device.type == "meta":
        raise TypeError("cannot store a tensor on the meta device: it holds no data")
    spec = _spec_of(tensor.dtype)
    meta = tensor_meta(tensor)
    data = tensor.detach().resolve_conj().resolve_neg()
    if data.device.type != "cpu":
        data = data.to("cpu")
    data = data.contiguous()
    if spec.complex_pairs:
        data = torch.view_as_real(data)
    elif spec.numpy_dtype != spec.torch_name:
        data = data.view(getattr(torch, _BYTE_CARRIERS[spec.numpy_dtype]))
    return data.numpy().view(spec.numpy_dtype), spec.name, meta


@dataclass(frozen=True, eq=False)
class HostCopy:
    """A host-memory copy of a tensor that lives on another device (an async save's snapshot of a CUDA
    tensor), stored as the tensor it copies, so that loading puts it back on `device`."""

    tensor: torch.Tensor
    device: str
    meta: Mapping[str, Any]


def tensor_meta(tensor: torch.Tensor | HostCopy) -> dict[str, Any]:
    """The device of a tensor and, for a `Parameter` or a tensor that requires grad, what restores that."""
    if isinstance(tensor, HostCopy):
        return dict(tensor.meta)
    meta: dict[str, Any] = {"device": str(tensor.device)}
    is_parameter = isinstance(tensor, _torch().nn.Parameter)
    if is_parameter:
        meta["parameter"] = True
    if is_parameter or tensor.requires_grad:
        meta["requires_grad"] = bool(tensor.requires_grad)
    return meta


def with_grad(tensor: torch.Tensor, meta: Mapping[str, Any]) -> torch.Tensor:
    """`tensor` as a `Parameter`, or requiring grad, when `meta` (of `tensor_meta`) says it was."""
    if meta.get("parameter"):
        return _torch().nn.Parameter(tensor, requires_grad=bool(meta.get("requires_grad", True)))
    if meta.get("requires_grad"):
        tensor.requires_grad_(True)
    return tensor


def array_to_tensor(
    array: np.ndarray, dtype: str, meta: Mapping[str, Any] | None = None, map_location: MapLocation = None
) -> torch.Tensor:
    """The tensor `tensor_to_array` took apart, bit for bit, on the device `map_location` picks (as `torch.load`
    takes it). A writable C-contiguous CPU array is viewed, not copied; a read-only one is copied."""
    torch = _torch()
    spec = SAFETENSORS_DTYPES.get(dtype)
    if spec is None:
        raise TypeError(f"tensor dtype {dtype!r} is unknown (known: {sorted(SAFETENSORS_DTYPES)})")
    meta = meta or {}
    held = np.asarray(array)
    if held.dtype != np.dtype(spec.numpy_dtype):
        held = held.view(spec.numpy_dtype)
    if not (held.flags.writeable and held.flags.c_contiguous):
        held = held.copy(order="C")
    if held.size == 0:  # numpy's strides of an empty array need not suit a view
        tensor = torch.empty(held.shape[:-1] if spec.complex_pairs else held.shape, dtype=_torch_dtype(dtype))
    elif spec.complex_pairs:
        tensor = torch.view_as_complex(torch.from_numpy(held))
    else:
        carrier = _BYTE_CARRIERS[spec.numpy_dtype] if spec.numpy_dtype != spec.torch_name else spec.numpy_dtype
        tensor = torch.from_numpy(held.view(carrier)).view(_torch_dtype(dtype))
    return with_grad(_place(tensor, str(meta.get("device", "cpu")), map_location), meta)


def _place(tensor: torch.Tensor, saved: str, map_location: MapLocation) -> torch.Tensor:
    """Move a CPU tensor to where `map_location` maps its saved device, as `torch.load` would."""
    torch = _torch()
    if callable(map_location) and not isinstance(map_location, (str, torch.device)):
        storage = map_location(tensor.untyped_storage(), saved)
        if storage is None:
            return _place(tensor, saved, None)
        placed = torch.empty((0,), dtype=tensor.dtype, device=storage.device)
        return placed.set_(storage, tensor.storage_offset(), tensor.shape, tensor.stride())
    if isinstance(map_location, Mapping):
        target = map_location.get(saved, saved)
    elif map_location is None:
        target = saved
    else:
        target = map_location
    device = torch.device(target)
    if device.type == "cuda" and not torch.cuda.is_available():
        how = "saved on" if map_location is None else "mapped to"
        raise RuntimeError(
            f"tensor {how} device {str(device)!r} but CUDA is not available here; "
            "pass map_location='cpu' (or a dict / callable) to load it elsewhere"
        )
    return tensor if device == tensor.device else tensor.to(device)


@dataclass(frozen=True)
class TensorView:
    """Where one tensor lies in a shared flat storage: element offset, shape and stride."""

    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """A dict the skeleton can hold."""
        return {"offset": self.offset, "shape": list(self.shape), "stride": list(self.stride)}

    @classmethod
    def from_json(cls, encoded: Mapping[str, Any]) -> TensorView:
        """The inverse of `to_json`."""
        return cls(int(encoded["offset"]), tuple(int(n) for n in encoded["shape"]), tuple(int(n) for n in encoded["stride"]))


@dataclass(frozen=True)
class SharedStorage:
    """Tensors of one state that share a storage: the flat span of it they cover, stored once under `key`
    (the first member's path), and each member's view into that span."""

    key: str
    flat: torch.Tensor
    views: dict[str, TensorView]


def _element_span(tensor: torch.Tensor) -> tuple[int, int]:
    """The storage elements `[start, end)` a tensor reaches."""
    start = tensor.storage_offset()
    if tensor.numel() == 0:
        return start, start
    return start, start + 1 + sum((size - 1) * abs(step) for size, step in zip(tensor.shape, tensor.stride()))


def group_shared_tensors(tensors: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> list[SharedStorage]:
    """The groups of two or more tensors (given with their paths) that share one storage with one dtype, each
    with the flat span covering them; tensors alone on their storage are left out. Tensors of different dtypes
    over one storage are not grouped, so each is stored whole on its own."""
    torch = _torch()
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    groups: dict[tuple[str, int, Any], list[tuple[str, Any]]] = {}
    for path, tensor in items:
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided or tensor.device.type == "meta":
            continue
        if tensor.untyped_storage().nbytes() == 0:
            continue
        key = (str(tensor.device), tensor.untyped_storage().data_ptr(), tensor.dtype)
        groups.setdefault(key, []).append((path, tensor))
    shared = []
    for members in groups.values():
        if len(members) < 2:
            continue
        spans = [_element_span(tensor) for _, tensor in members]
        start, end = min(s for s, _ in spans), max(e for _, e in spans)
        whole = members[0][1].detach()
        flat = whole.as_strided((end - start,), (1,), start)
        views = {path: TensorView(t.storage_offset() - start, tuple(t.shape), tuple(t.stride())) for path, t in members}
        shared.append(SharedStorage(members[0][0], flat, views))
    return shared


def rebuild_shared_tensors(flat: torch.Tensor, views: Mapping[str, TensorView]) -> dict[str, torch.Tensor]:
    """The tensors `group_shared_tensors` grouped, as views of the one loaded `flat` tensor: writing through
    one shows through the others."""
    return {path: flat.as_strided(view.shape, view.stride, view.offset) for path, view in views.items()}


def encode_torch_value(value: Any) -> dict[str, Any]:
    """A skeleton node for a `torch.Size`, `torch.dtype` or `torch.device` value."""
    torch = _torch()
    if isinstance(value, torch.Size):
        return {"t": "torch.Size", "v": [int(n) for n in value]}
    if isinstance(value, torch.dtype):
        return {"t": "torch.dtype", "v": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"t": "torch.device", "v": str(value)}
    raise TypeError(f"not a torch.Size, torch.dtype or torch.device: {type(value).__qualname__}")


def decode_torch_value(node: Mapping[str, Any]) -> Any:
    """The value `encode_torch_value` encoded."""
    torch = _torch()
    kind, value = node["t"], node["v"]
    if kind == "torch.Size":
        return torch.Size(int(n) for n in value)
    if kind == "torch.dtype":
        found = getattr(torch, value, None)
        if not isinstance(found, torch.dtype):
            raise TypeError(f"torch {torch.__version__} has no dtype {value!r}")
        return found
    if kind == "torch.device":
        return torch.device(value)
    raise TypeError(f"not a torch value node: {kind!r}")


_TORCH_REFUSALS = (
    # (attribute path under torch, what it is, what to pass instead)
    ("nn.Module", "an nn.Module", "model.state_dict()"),
    ("optim.Optimizer", "an optimizer", "optimizer.state_dict()"),
    ("optim.lr_scheduler.LRScheduler", "an LR scheduler", "scheduler.state_dict()"),
    ("optim.lr_scheduler.ReduceLROnPlateau", "an LR scheduler", "scheduler.state_dict()"),
    ("amp.GradScaler", "a GradScaler", "scaler.state_dict()"),
    ("Generator", "a torch.Generator", "generator.get_state()"),
)


def _torch_attribute(torch: Any, dotted: str) -> Any:
    found = torch
    for name in dotted.split("."):
        found = getattr(found, name, None)
    return found


def refusal_message(obj: Any) -> str | None:
    """Why `obj` cannot be stored and what to pass instead, for an `nn.Module`, optimizer, LR scheduler,
    GradScaler, generator or function; None for anything else."""
    what = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType, functools.partial)):
        return (
            f"cannot store a function ({getattr(obj, '__qualname__', what)}) without pickle; "
            "store the values it computes, or its settings, and rebuild it in code"
        )
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    for dotted, kind, instead in _TORCH_REFUSALS:
        cls = _torch_attribute(torch, dotted)
        if isinstance(cls, type) and isinstance(obj, cls):
            return f"cannot store {kind} ({what}) without pickle; pass {instead} instead"
    return None
