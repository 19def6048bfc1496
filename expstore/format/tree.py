"""Split a state tree into a JSON skeleton plus its numpy arrays, and put it back together exactly.

The skeleton keeps structure and small leaves (dict/list/tuple, str, bytes, bool, None, ints of
any size, floats incl. nan/inf/-0.0, numpy scalars with their dtype); arrays are replaced by
their path (`"model/w"`), under which array-native stores keep them as real datasets. Dict keys
are str or int. Torch tensors, ml_dtypes arrays and other typed leaves are held by numpy arrays
of their bytes (`typed_leaves`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .torch_tensors import HostCopy, MapLocation, is_torch_object, refusal_message
from .typed_leaves import (
    TYPED_NODE_TYPES,
    Decoding,
    PendingTensors,
    decode_typed,
    is_jax_array,
    is_ml_dtypes,
    ml_array_node,
    torch_node,
)

__all__ = [
    "MAX_DEPTH",
    "NODE_TYPES",
    "Skeleton",
    "array_paths",
    "check_storable",
    "check_structure",
    "dtype_description",
    "dtype_from_description",
    "dtype_notes",
    "flatten",
    "leaf_arrays",
    "select_paths",
    "selected_arrays",
    "unflatten",
    "walk_skeleton",
]

Skeleton = dict[str, Any]

# flatten(fallback=): (value, path, where) -> (skeleton node, payload array stored under `path`).
EncodeFallback = Callable[[Any, str, str], tuple[Skeleton, np.ndarray]]
# unflatten(fallback=): (node of a type unflatten does not know, arrays) -> value.
DecodeFallback = Callable[[Skeleton, Mapping[str, Any]], Any]

# The node types flatten writes (a fallback may add its own, as the codec's "pickle").
NODE_TYPES = frozenset(
    {"none", "bool", "int", "float", "str", "bytes", "npscalar", "array", "dict", "list", "tuple", *TYPED_NODE_TYPES}
)
# Nodes whose value lies in an array of their own path (a tensor with a "storage" lies in that one's array).
_ARRAY_NODES = frozenset({"array", "pickle", "ml_array", "tensor"})
MAX_DEPTH = 100  # nested containers a tree may have: the recursive walks (here, JSON, the stores) stay far from Python's limit
_DECIMAL_INT_BITS = 63  # ints this small keep the readable decimal form; bigger ones are hex (no digit limit)
_LEAVE = object()
_CONTAINERS = (dict, list, tuple)


def flatten(
    tree: Any, name: str = "tree", fallback: EncodeFallback | None = None
) -> tuple[Skeleton, dict[str, np.ndarray]]:
    """Return (skeleton, {path: array}); `TypeError` names the first leaf that cannot be stored,
    as `name['optimizer']['fn']`.

    With `fallback`, such a leaf (any other type, an object-dtype array, a dict with non-str keys,
    a list/tuple subclass) is handed to `fallback(value, path, where)` instead, which returns the
    skeleton node to put there and an array that is stored under `path` (e.g. a pickle as uint8).
    """
    check_structure(tree, name, MAX_DEPTH + 1)  # + 1: a checkpoint on HDF5/Zarr wraps its (checked) state in one dict
    encoding = _Encoding({}, fallback)
    skeleton = _encode(tree, [], name, encoding)
    if encoding.tensors.found:
        encoding.tensors.store(encoding.arrays)
    return skeleton, encoding.arrays


@dataclass
class _Encoding:
    """What one `flatten` collects: the arrays, the tensors met (stored once the tree is known), the fallback."""

    arrays: dict[str, np.ndarray]
    fallback: EncodeFallback | None
    tensors: PendingTensors = field(default_factory=PendingTensors)


def check_storable(tree: Any, name: str = "tree") -> None:
    """Raise the `TypeError` / `ValueError` `flatten` would raise for `tree`, without taking a tensor's
    bytes (no device-to-host copy): an async save refuses a bad state before it copies anything."""
    check_structure(tree, name, MAX_DEPTH + 1)
    _encode(tree, [], name, _Encoding({}, None))


def check_structure(tree: Any, name: str = "tree", max_depth: int = MAX_DEPTH) -> None:
    """Refuse a tree no store can hold, before anything walks it recursively: `TypeError` at a
    container that contains itself, `ValueError` past `max_depth` nested containers, each naming
    the place (`state['a']['a']`)."""
    on_path: set[int] = set()
    if not isinstance(tree, _CONTAINERS):
        return
    stack: list[tuple[Any, Any, Any, int]] = [(tree, None, None, 0)]  # (value, key in parent, parent's entry, depth)
    while stack:
        entry = stack.pop()
        value = entry[0]
        if value is _LEAVE:
            on_path.discard(entry[1])
            continue
        if id(value) in on_path:
            raise TypeError(f"{_where(entry, name)}: circular reference (a container that contains itself)")
        if entry[3] >= max_depth:
            raise ValueError(f"{_where(entry, name)}: the tree nests containers deeper than {max_depth} levels")
        on_path.add(id(value))
        stack.append((_LEAVE, id(value), None, 0))
        children = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        stack.extend((c, k, entry, entry[3] + 1) for k, c in reversed(children) if isinstance(c, _CONTAINERS))


def _where(entry: tuple[Any, Any, Any, int], name: str) -> str:
    """`name['a'][0]`: the place of a `check_structure` entry in its tree."""
    keys = []
    while entry[2] is not None:
        keys.append(entry[1])
        entry = entry[2]
    return name + "".join(f"[{k!r}]" for k in reversed(keys))


def unflatten(
    skeleton: Skeleton, arrays: Mapping[str, Any], fallback: DecodeFallback | None = None, map_location: MapLocation = None
) -> Any:
    """Rebuild the tree; an array path missing from `arrays` (not selected) is left out of its parent.

    With `fallback`, a node of a type this module does not know is rebuilt by `fallback(node, arrays)`;
    such a node that has a `path` missing from `arrays` is left out like an unselected array.
    Tensors go where `map_location` says, as with `torch.load` (None: the device they were saved on).
    A root that is itself an array not read gives None.
    """
    decoder = _Decoder(arrays, fallback, Decoding(map_location))
    return _decode(skeleton, decoder) if _present(skeleton, decoder) else None


def leaf_arrays(skeleton: Skeleton) -> dict[str, str]:
    """{leaf path: path of the array holding it} of every array-like leaf, in tree order; tensors that
    share a storage all name that storage's array. `ValueError` when a path repeats."""
    leaves: dict[str, str] = {}
    for node, _ in walk_skeleton(skeleton):
        if node["t"] in _ARRAY_NODES:
            path = node.get("path")
            storage = node.get("storage", path) if node["t"] == "tensor" else path
            if not isinstance(path, str) or not isinstance(storage, str) or path in leaves:
                raise ValueError(f"the tree skeleton names leaf {path!r} twice or not as a string")
            leaves[path] = storage
    return leaves


def dtype_notes(skeleton: Skeleton) -> dict[str, str]:
    """{array path: dtype name} of the arrays holding typed leaves (`"BF16"`, `"bfloat16"`), whose own
    dtype is the unsigned int carrying their bytes: what array-native stores record beside them."""
    return {
        node.get("storage", node["path"]): node["dtype"]
        for node, _ in walk_skeleton(skeleton)
        if node["t"] in ("tensor", "ml_array")
    }


def array_paths(skeleton: Skeleton) -> list[str]:
    """Paths of every array the skeleton refers to, in tree order (a shared storage once)."""
    return list(dict.fromkeys(leaf_arrays(skeleton).values()))


def selected_arrays(leaves: Mapping[str, str], select: list[str] | str | None) -> list[str]:
    """The array paths a `select=` of leaf paths (or prefixes) needs, given `leaf_arrays`' map; `KeyError`
    names entries that match no leaf. A tensor selected brings the storage it shares with others."""
    chosen = leaves if select is None else select_paths(leaves, select)
    return list(dict.fromkeys(leaves[p] for p in chosen))


def walk_skeleton(skeleton: Any) -> Iterator[tuple[Skeleton, tuple[str | int, ...]]]:
    """Every node of a skeleton, depth first in tree order, with the dict keys and list indices
    that lead to it. `ValueError` at a node or container that is malformed, so a skeleton read
    from a (possibly hostile) file is safe to walk; the types of leaves are left to the caller."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(skeleton, ())]
    while stack:
        node, keys = stack.pop()
        if not isinstance(node, dict) or not isinstance(node.get("t"), str):
            raise ValueError("the tree skeleton has a node that is not an object with a type")
        yield node, keys
        kind = node["t"]
        if kind == "dict":
            items = node.get("items")
            if not isinstance(items, list) or not all(
                isinstance(i, list) and len(i) == 2 and type(i[0]) in (str, int) for i in items
            ):
                raise ValueError("a dict node of the tree skeleton is malformed")
            stack.extend((child, (*keys, k)) for k, child in reversed(items))
        elif kind in ("list", "tuple"):
            items = node.get("items")
            if not isinstance(items, list):
                raise ValueError("a list node of the tree skeleton is malformed")
            stack.extend((items[i], (*keys, i)) for i in range(len(items) - 1, -1, -1))


def dtype_description(dtype: np.dtype) -> Any:
    """The JSON-able description of `dtype` (numpy's `.npy` header form) that skeletons and manifests record."""
    return np.lib.format.dtype_to_descr(dtype)


def dtype_from_description(description: Any) -> np.dtype:
    """Inverse of `dtype_description` after a JSON round trip (which turned its tuples into lists);
    `ValueError` when `description` is not one."""
    return np.lib.format.descr_to_dtype(_numpy_description(description))


def _numpy_description(description: Any) -> Any:
    """A JSON-decoded dtype description in numpy's own form: its fields, titles and shapes as tuples."""
    if isinstance(description, str):
        return description
    if not isinstance(description, list):
        raise ValueError("a dtype description is a string or a list of fields")
    fields = []
    for entry in description:
        if not isinstance(entry, list) or not 2 <= len(entry) <= 3:
            raise ValueError(f"malformed field {entry!r}")
        name = tuple(entry[0]) if isinstance(entry[0], list) else entry[0]  # (title, name)
        fmt = _numpy_description(entry[1]) if isinstance(entry[1], list) else entry[1]  # a nested structure
        fields.append((name, fmt, tuple(entry[2])) if len(entry) == 3 else (name, fmt))
    return fields


def select_paths(paths: Collection[str], select: list[str] | None) -> list[str]:
    """The array paths a `select=` asks for: each entry names one path or every path below it.
    `paths` (in tree order) may be a dict keyed by path, which makes exact names O(1) to find.

    Raises `KeyError` naming the entries that match no array.
    """
    if select is None:
        return list(paths)
    if isinstance(select, str):
        select = [select]
    if all(s in paths for s in select):  # each names one array, so none is a prefix of another
        return list(dict.fromkeys(select))
    exact, below = set(select), tuple(s.rstrip("/") + "/" for s in select)
    chosen = [p for p in paths if p in exact or p.startswith(below)]
    unmatched = [s for s in select if s not in chosen and not any(p.startswith(s.rstrip("/") + "/") for p in chosen)]
    if unmatched:
        raise KeyError(f"select={unmatched!r} matches no array of the tree (arrays: {list(paths)!r})")
    return chosen


def _escape_segment(name: str) -> str:
    """Make a dict key usable as one path segment: `%`, `/` and a leading `.` are %-escaped."""
    escaped = name.replace("%", "%25").replace("/", "%2F")
    if escaped.startswith(".") or escaped == "":
        escaped = "%2E" + escaped[1:] if escaped else "%00"
    return escaped


def _key_segments(keys: list[Any]) -> list[str]:
    """One path segment per dict key: int keys in decimal, and a str key that reads like one of them gets
    a `%s` prefix (`%` never starts an escaped key otherwise), so the two never share a path."""
    ints = {str(k) for k in keys if not isinstance(k, str)}
    segments = []
    for key in keys:
        if not isinstance(key, str):
            segments.append(str(key))
        else:
            escaped = _escape_segment(key)
            segments.append("%s" + escaped if escaped in ints else escaped)
    return segments


def _encode(value: Any, path: list[str], where: str, encoding: _Encoding) -> Skeleton:
    arrays, fallback = encoding.arrays, encoding.fallback
    if value is None:
        return {"t": "none"}
    if isinstance(value, bool):
        return {"t": "bool", "v": value}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            return _unstorable(
                value, path, where, arrays, fallback, f"{where}: numpy arrays of dtype object cannot be stored without pickle"
            )
        name = "/".join(path) if path else "%root"
        if is_ml_dtypes(value.dtype):
            node, arrays[name] = ml_array_node(value, name)
            return node
        arrays[name] = value
        return {"t": "array", "path": name}
    if isinstance(value, np.generic):
        if value.dtype.hasobject:
            return _unstorable(
                value, path, where, arrays, fallback, f"{where}: numpy scalars of dtype object cannot be stored without pickle"
            )
        if is_ml_dtypes(value.dtype):
            name = "/".join(path) if path else "%root"
            node, arrays[name] = ml_array_node(value, name)
            return node
        return {"t": "npscalar", "dtype": dtype_description(value.dtype), "v": value.tobytes().hex()}
    if isinstance(value, int):
        value = int(value)
        if value.bit_length() <= _DECIMAL_INT_BITS:
            return {"t": "int", "v": str(value)}
        return {"t": "int", "x": format(value, "x")}
    if isinstance(value, float):
        return {"t": "float", "v": repr(float(value))}
    if isinstance(value, str):
        return {"t": "str", "v": value}
    if isinstance(value, bytes):
        return {"t": "bytes", "v": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        keys = list(value)
        bad = next((k for k in keys if not isinstance(k, str) and type(k) is not int), _LEAVE)
        if bad is not _LEAVE:
            return _unstorable(
                value, path, where, arrays, fallback, f"{where}: dict keys must be str or int, got {type(bad).__name__} {bad!r}"
            )
        items = []
        for key, segment in zip(keys, _key_segments(keys)):
            stored = key if type(key) is int else str(key)
            items.append([stored, _encode(value[key], [*path, segment], f"{where}[{key!r}]", encoding)])
        return {"t": "dict", "items": items}
    if is_torch_object(value) or isinstance(value, HostCopy):
        node = torch_node(value, "/".join(path) if path else "%root", where, encoding.tensors)
        if node is not None:
            return node
    elif is_jax_array(value):
        return _encode(np.asarray(value), path, where, encoding)
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        if type(value) not in (list, tuple):
            return _unstorable(
                value, path, where, arrays, fallback, f"{where}: {type(value).__name__} is not a plain list or tuple"
            )
        children = [_encode(child, [*path, str(i)], f"{where}[{i}]", encoding) for i, child in enumerate(value)]
        return {"t": kind, "items": children}
    reason = refusal_message(value) or f"cannot store a {type(value).__module__}.{type(value).__qualname__} without pickle"
    return _unstorable(value, path, where, arrays, fallback, f"{where}: {reason}")


def _unstorable(
    value: Any, path: list[str], where: str, arrays: dict[str, np.ndarray], fallback: EncodeFallback | None, message: str
) -> Skeleton:
    """A leaf the skeleton cannot hold: `TypeError(message)`, or the fallback's node and payload array."""
    if fallback is None:
        raise TypeError(message)
    name = "/".join(path) if path else "%root"
    node, payload = fallback(value, name, where)
    arrays[name] = payload
    return node


@dataclass
class _Decoder:
    """What one `unflatten` reads from: the arrays read, the fallback, and the typed leaves' state."""

    arrays: Mapping[str, Any]
    fallback: DecodeFallback | None
    typed: Decoding


def _decode(node: Skeleton, decoder: _Decoder) -> Any:
    kind = node["t"]
    arrays = decoder.arrays
    if kind == "none":
        return None
    if kind == "bool":
        return bool(node["v"])
    if kind == "int":
        return int(node["x"], 16) if "x" in node else int(node["v"])  # decimal: within the process's digit limit
    if kind == "float":
        return float(node["v"])
    if kind == "str":
        return node["v"]
    if kind == "bytes":
        return base64.b64decode(node["v"])
    if kind == "npscalar":
        dtype = dtype_from_description(node["dtype"])
        raw = bytes.fromhex(node["v"])
        if dtype.hasobject or len(raw) != dtype.itemsize:
            raise ValueError(f"a numpy scalar of {dtype} needs {dtype.itemsize} bytes, not {len(raw)} (or is an object)")
        return np.frombuffer(raw, dtype=dtype)[0]
    if kind == "array":
        return arrays[node["path"]]
    # (an array child is tested inline: a select= of 1 leaf among many would otherwise pay a call per leaf)
    if kind == "dict":
        return {
            k: _decode(c, decoder)
            for k, c in node["items"]
            if (c["path"] in arrays if c["t"] == "array" else _present(c, decoder))
        }
    if kind in ("list", "tuple"):
        children = [
            _decode(c, decoder) for c in node["items"] if (c["path"] in arrays if c["t"] == "array" else _present(c, decoder))
        ]
        return tuple(children) if kind == "tuple" else children
    if kind in TYPED_NODE_TYPES:
        return decode_typed(node, arrays, decoder.typed)
    if decoder.fallback is not None:
        return decoder.fallback(node, arrays)
    raise ValueError(f"unknown skeleton node type {kind!r}")


def _present(node: Skeleton, decoder: _Decoder) -> bool:
    """A node survives a `select=` read unless it is an array (or a fallback leaf) that was not read;
    containers stay, empty when none of their arrays was selected, and so do plain values."""
    kind = node["t"]
    if kind == "tensor":
        return node.get("storage", node["path"]) in decoder.arrays
    if kind in ("array", "ml_array") or (decoder.fallback is not None and kind not in NODE_TYPES and "path" in node):
        return node["path"] in decoder.arrays
    return True
