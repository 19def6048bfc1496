"""Skeleton nodes for the leaves numpy cannot describe on its own: torch tensors (tensors sharing a
storage are stored once), `torch.Size` / `torch.dtype` / `torch.device` values, numpy arrays of
`ml_dtypes` dtypes and `jax.Array`s. Each array-like leaf is held by a numpy array of its bytes (an
unsigned int of the same width where numpy lacks the type) plus a dtype name, so every store keeps
it as a plain array and the checkpoint header names it in safetensors' terms (`BF16`, `F8_E4M3`).

torch, ml_dtypes and jax are imported only when a tree holds their objects.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .torch_tensors import (
    SAFETENSORS_DTYPES,
    HostCopy,
    MapLocation,
    TensorView,
    array_to_tensor,
    decode_torch_value,
    dtype_name,
    encode_torch_value,
    group_shared_tensors,
    tensor_meta,
    tensor_to_array,
    with_grad,
)

__all__ = [
    "DTYPE_ATTRIBUTE",
    "TYPED_NODE_TYPES",
    "Decoding",
    "PendingTensors",
    "decode_typed",
    "is_jax_array",
    "is_ml_dtypes",
    "ml_array_node",
    "stored_dtype",
    "torch_node",
]

TORCH_VALUE_TYPES = ("torch.Size", "torch.dtype", "torch.device")
DTYPE_ATTRIBUTE = "expstore_dtype"  # beside an HDF5 / Zarr dataset holding a typed leaf: its dtype name (BF16, bfloat16)
TYPED_NODE_TYPES = frozenset({"tensor", "ml_array", *TORCH_VALUE_TYPES})

# ml_dtypes name -> the safetensors dtype of the same bits; other ml_dtypes lie as their carrier's dtype.
_ML_SAFETENSORS = {
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ",
    "float8_e5m2fnuz": "F8_E5M2FNUZ",
    "float8_e8m0fnu": "F8_E8M0",
}


@dataclass
class PendingTensors:
    """The tensors one flatten met, whose nodes and arrays are filled once the whole tree is known
    (which tensors share a storage is a property of the whole tree)."""

    found: list[tuple[str, str, Any, dict[str, Any]]] = field(default_factory=list)  # (path, place, tensor, node)

    def store(self, arrays: dict[str, np.ndarray]) -> None:
        """Put each tensor's bytes into `arrays` (a shared storage once, under its first tensor's path)
        and complete its node; `TypeError` names the place of a tensor that cannot be stored."""
        members: dict[str, tuple[str, TensorView]] = {}
        tensors = {path: held.tensor if isinstance(held, HostCopy) else held for path, _, held, _ in self.found}
        places = {path: where for path, where, _, _ in self.found}
        for group in group_shared_tensors(tensors):
            key, held = group.key, group.flat
            whole = [p for p, v in group.views.items() if v.offset == 0 and tensors[p].is_contiguous()
                     and tensors[p].numel() == group.flat.numel()]
            if whole:  # a tie of equal tensors: held in the first one's shape, as a plain safetensors reader sees it
                key, held = whole[0], tensors[whole[0]]
            try:
                arrays[key], _, _ = tensor_to_array(held)
            except TypeError as exc:
                raise TypeError(f"{places[key]}: {exc}") from None
            members.update((path, (key, view)) for path, view in group.views.items())
        for path, where, held, node in self.found:
            tensor = tensors[path]
            try:
                node.update(tensor_meta(held), dtype=dtype_name(tensor.dtype))
                if path in members:
                    storage, view = members[path]
                    node.update(storage=storage, view=view.to_json())
                else:
                    arrays[path], _, _ = tensor_to_array(tensor)
            except TypeError as exc:
                raise TypeError(f"{where}: {exc}") from None


def torch_node(value: Any, path: str, where: str, pending: PendingTensors) -> dict[str, Any] | None:
    """The node of a torch tensor or a `HostCopy` of one (completed by `pending.store`), or of a Size /
    dtype / device value; None for any other torch object."""
    torch = sys.modules["torch"]
    if isinstance(value, (torch.Tensor, HostCopy)):
        node: dict[str, Any] = {"t": "tensor", "path": path}
        pending.found.append((path, where, value, node))
        return node
    if isinstance(value, (torch.Size, torch.dtype, torch.device)):
        return encode_torch_value(value)
    return None


def is_ml_dtypes(dtype: np.dtype) -> bool:
    """True for an `ml_dtypes` dtype (bfloat16, float8_*, int4, ...), which numpy cannot describe."""
    return dtype.type.__module__ == "ml_dtypes"


def is_jax_array(value: Any) -> bool:
    """True for a `jax.Array`, told by its type's module so that jax is never imported here."""
    return "jax" in sys.modules and type(value).__module__.split(".", 1)[0] in ("jax", "jaxlib")


def ml_array_node(value: np.ndarray | np.generic, path: str) -> tuple[dict[str, Any], np.ndarray]:
    """(node, carrier) of an ml_dtypes array or scalar: its bytes as unsigned ints of the same width."""
    array = np.asarray(value)
    node: dict[str, Any] = {"t": "ml_array", "path": path, "dtype": array.dtype.name}
    if isinstance(value, np.generic):
        node["scalar"] = True
    return node, array.view(f"<u{array.dtype.itemsize}")


def stored_dtype(node: Mapping[str, Any]) -> str | None:
    """The safetensors dtype a typed node's array is laid out as in a checkpoint object; None for the
    array's own dtype (plain arrays, and ml_dtypes that safetensors has no name for)."""
    if node["t"] == "tensor":
        spec = SAFETENSORS_DTYPES.get(node.get("dtype"))  # type: ignore[arg-type]
        if spec is None:
            raise ValueError(f"tensor {node.get('path')!r}: dtype {node.get('dtype')!r} is unknown")
        return spec.stored_as
    if node["t"] == "ml_array":
        return _ML_SAFETENSORS.get(node.get("dtype"))  # type: ignore[arg-type]
    return None


@dataclass
class Decoding:
    """What decoding typed nodes of one tree needs: where tensors go, and the shared storages loaded so far."""

    map_location: MapLocation = None
    storages: dict[tuple[str, str], Any] = field(default_factory=dict)


def decode_typed(node: Mapping[str, Any], arrays: Mapping[str, Any], decoding: Decoding) -> Any:
    """The value of a typed node; `ValueError` when the node and its array do not fit together.

    An array given as rows of a sharded leaf (an object with `local` and `with_local`) comes back as
    such rows again, holding the decoded value."""
    kind = node["t"]
    if kind in TORCH_VALUE_TYPES:
        _import("torch", "expstore[torch]")
        return decode_torch_value(node)
    held = arrays[node.get("storage", node["path"]) if kind == "tensor" else node["path"]]
    if hasattr(held, "with_local"):
        return held.with_local(decode_typed(node, {node["path"]: held.local}, decoding))  # rows never share a storage
    if kind == "ml_array":
        return _decode_ml_array(node, held)
    _import("torch", "expstore[torch]")
    dtype = node.get("dtype")
    spec = SAFETENSORS_DTYPES.get(dtype)  # type: ignore[arg-type]
    if spec is None:
        raise ValueError(f"tensor {node.get('path')!r}: dtype {dtype!r} is unknown")
    storage = node.get("storage")
    carrier = arrays[node["path"] if storage is None else storage]
    if carrier.dtype != np.dtype(spec.numpy_dtype) or (spec.complex_pairs and carrier.shape[-1:] != (2,)):
        raise ValueError(f"tensor {node['path']!r}: a {dtype} tensor is not held by {carrier.dtype} {carrier.shape}")
    if storage is None:
        return array_to_tensor(carrier, dtype, node, decoding.map_location)
    flat = decoding.storages.get((storage, dtype))
    if flat is None:
        flat = array_to_tensor(carrier, dtype, {"device": node.get("device", "cpu")}, decoding.map_location)
        decoding.storages[(storage, dtype)] = flat
    view = TensorView.from_json(node["view"])
    reach = view.offset + sum((n - 1) * s for n, s in zip(view.shape, view.stride)) if all(view.shape) else view.offset - 1
    if view.offset < 0 or min(view.stride, default=0) < 0 or reach >= flat.numel():
        raise ValueError(f"tensor {node['path']!r}: its view {node['view']!r} reaches past its storage of {flat.numel()}")
    return with_grad(flat.as_strided(view.shape, view.stride, view.offset), node)


def _decode_ml_array(node: Mapping[str, Any], carrier: np.ndarray) -> Any:
    """The ml_dtypes array (or scalar) `ml_array_node` took apart."""
    ml_dtypes = _import("ml_dtypes", "ml_dtypes")
    found = getattr(ml_dtypes, str(node.get("dtype")), None)
    dtype = np.dtype(found) if isinstance(found, type) and issubclass(found, np.generic) else None
    if dtype is None or not is_ml_dtypes(dtype) or carrier.dtype != np.dtype(f"<u{dtype.itemsize}"):
        raise ValueError(f"array {node['path']!r}: ml_dtypes {node.get('dtype')!r} does not fit {carrier.dtype}")
    array = carrier.view(dtype)
    return array[()] if node.get("scalar") else array


def _import(module: str, package: str) -> Any:
    """Import what a typed node needs, or say what to install."""
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"this tree holds {module} values: pip install '{package}' to load it") from None
