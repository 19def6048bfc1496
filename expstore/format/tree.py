"""Split a state tree into a JSON skeleton plus its numpy arrays, and put it back together exactly.

The skeleton keeps structure and small leaves (dict/list/tuple, str, bytes, bool, None, ints of
any size, floats incl. nan/inf/-0.0, numpy scalars with their dtype); arrays are replaced by
their path (`"model/w"`), under which array-native stores keep them as real datasets.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

import numpy as np

__all__ = [
    "MAX_DEPTH",
    "NODE_TYPES",
    "Skeleton",
    "array_paths",
    "check_structure",
    "dtype_description",
    "dtype_from_description",
    "flatten",
    "select_paths",
    "unflatten",
    "walk_skeleton",
]

Skeleton = dict[str, Any]

# flatten(fallback=): (value, path, where) -> (skeleton node, payload array stored under `path`).
EncodeFallback = Callable[[Any, str, str], tuple[Skeleton, np.ndarray]]
# unflatten(fallback=): (node of a type unflatten does not know, arrays) -> value.
DecodeFallback = Callable[[Skeleton, Mapping[str, Any]], Any]

# The node types flatten writes (a fallback may add its own, as the codec's "pickle").
NODE_TYPES = frozenset({"none", "bool", "int", "float", "str", "bytes", "npscalar", "array", "dict", "list", "tuple"})
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
    arrays: dict[str, np.ndarray] = {}
    return _encode(tree, [], name, arrays, fallback), arrays


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


def unflatten(skeleton: Skeleton, arrays: Mapping[str, Any], fallback: DecodeFallback | None = None) -> Any:
    """Rebuild the tree; an array path missing from `arrays` (not selected) is left out of its parent.

    With `fallback`, a node of a type this module does not know is rebuilt by `fallback(node, arrays)`;
    such a node that has a `path` missing from `arrays` is left out like an unselected array.
    """
    return _decode(skeleton, arrays, fallback)


def array_paths(skeleton: Skeleton) -> list[str]:
    """Paths of every array the skeleton refers to, in tree order."""
    return [node["path"] for node, _ in walk_skeleton(skeleton) if node["t"] == "array"]


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
                isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) for i in items
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
    for field in description:
        if not isinstance(field, list) or not 2 <= len(field) <= 3:
            raise ValueError(f"malformed field {field!r}")
        name = tuple(field[0]) if isinstance(field[0], list) else field[0]  # (title, name)
        fmt = _numpy_description(field[1]) if isinstance(field[1], list) else field[1]  # a nested structure
        fields.append((name, fmt, tuple(field[2])) if len(field) == 3 else (name, fmt))
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


def _encode(
    value: Any, path: list[str], where: str, arrays: dict[str, np.ndarray], fallback: EncodeFallback | None = None
) -> Skeleton:
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
        arrays[name] = value
        return {"t": "array", "path": name}
    if isinstance(value, np.generic):
        if value.dtype.hasobject:
            return _unstorable(
                value, path, where, arrays, fallback, f"{where}: numpy scalars of dtype object cannot be stored without pickle"
            )
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
        if fallback is not None and not all(isinstance(key, str) for key in value):
            return _unstorable(value, path, where, arrays, fallback, "")
        items = []
        for key, child in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: dict keys must be str, got {type(key).__name__} {key!r}")
            items.append([key, _encode(child, [*path, _escape_segment(key)], f"{where}[{key!r}]", arrays, fallback)])
        return {"t": "dict", "items": items}
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        if type(value) not in (list, tuple):
            return _unstorable(
                value, path, where, arrays, fallback, f"{where}: {type(value).__name__} is not a plain list or tuple"
            )
        children = [_encode(child, [*path, str(i)], f"{where}[{i}]", arrays, fallback) for i, child in enumerate(value)]
        return {"t": kind, "items": children}
    return _unstorable(
        value,
        path,
        where,
        arrays,
        fallback,
        f"{where}: cannot store a {type(value).__module__}.{type(value).__qualname__} without pickle",
    )


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


def _decode(node: Skeleton, arrays: Mapping[str, Any], fallback: DecodeFallback | None = None) -> Any:
    kind = node["t"]
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
            k: _decode(c, arrays, fallback)
            for k, c in node["items"]
            if (c["path"] in arrays if c["t"] == "array" else _present(c, arrays, fallback))
        }
    if kind in ("list", "tuple"):
        children = [
            _decode(c, arrays, fallback)
            for c in node["items"]
            if (c["path"] in arrays if c["t"] == "array" else _present(c, arrays, fallback))
        ]
        return tuple(children) if kind == "tuple" else children
    if fallback is not None:
        return fallback(node, arrays)
    raise ValueError(f"unknown skeleton node type {kind!r}")


def _present(node: Skeleton, arrays: Mapping[str, Any], fallback: DecodeFallback | None = None) -> bool:
    """A node survives a `select=` read unless it is an array (or a fallback leaf) that was not read;
    containers stay, empty when none of their arrays was selected, and so do plain values."""
    if node["t"] == "array":
        return node["path"] in arrays
    if fallback is not None and node["t"] not in NODE_TYPES and "path" in node:
        return node["path"] in arrays
    return True

