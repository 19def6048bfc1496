"""Split a state tree into a JSON skeleton plus its numpy arrays, and put it back together exactly.

The skeleton keeps structure and small leaves (dict/list/tuple, str, bytes, bool, None, ints of
any size, floats incl. nan/inf/-0.0, numpy scalars with their dtype); arrays are replaced by
their path (`"model/w"`), under which array-native stores keep them as real datasets.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

Skeleton = dict[str, Any]


def flatten(tree: Any, name: str = "tree") -> tuple[Skeleton, dict[str, np.ndarray]]:
    """Return (skeleton, {path: array}); `TypeError` names the first leaf that cannot be stored,
    as `name['optimizer']['fn']`."""
    arrays: dict[str, np.ndarray] = {}
    return _encode(tree, [], name, arrays), arrays


def unflatten(skeleton: Skeleton, arrays: Mapping[str, Any]) -> Any:
    """Rebuild the tree; an array path missing from `arrays` (not selected) is left out of its parent."""
    return _decode(skeleton, arrays)


def array_paths(skeleton: Skeleton) -> list[str]:
    """Paths of every array the skeleton refers to, in tree order."""
    found: list[str] = []
    stack = [skeleton]
    while stack:
        node = stack.pop()
        if node["t"] == "array":
            found.append(node["path"])
        elif node["t"] in ("dict", "list", "tuple"):
            children = [child for _, child in node["items"]] if node["t"] == "dict" else node["items"]
            stack.extend(reversed(children))
    return found


def select_paths(paths: list[str], select: list[str] | None) -> list[str]:
    """The array paths a `select=` asks for: each entry names one path or every path below it.

    Raises `KeyError` naming the entries that match no array.
    """
    if select is None:
        return list(paths)
    if isinstance(select, str):
        select = [select]
    chosen = [p for p in paths if any(p == s or p.startswith(s.rstrip("/") + "/") for s in select)]
    unmatched = [s for s in select if not any(p == s or p.startswith(s.rstrip("/") + "/") for p in paths)]
    if unmatched:
        raise KeyError(f"select={unmatched!r} matches no array of the tree (arrays: {paths!r})")
    return chosen


def escape_segment(name: str) -> str:
    """Make a dict key usable as one path segment: `%`, `/` and a leading `.` are %-escaped."""
    escaped = name.replace("%", "%25").replace("/", "%2F")
    if escaped.startswith(".") or escaped == "":
        escaped = "%2E" + escaped[1:] if escaped else "%00"
    return escaped


def _encode(value: Any, path: list[str], where: str, arrays: dict[str, np.ndarray]) -> Skeleton:
    if value is None:
        return {"t": "none"}
    if isinstance(value, bool):
        return {"t": "bool", "v": value}
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"{where}: numpy arrays of dtype object cannot be stored without pickle")
        name = "/".join(path) if path else "%root"
        arrays[name] = value
        return {"t": "array", "path": name}
    if isinstance(value, np.generic):
        if value.dtype.hasobject:
            raise TypeError(f"{where}: numpy scalars of dtype object cannot be stored without pickle")
        return {"t": "npscalar", "dtype": np.lib.format.dtype_to_descr(value.dtype), "v": value.tobytes().hex()}
    if isinstance(value, int):
        return {"t": "int", "v": str(int(value))}
    if isinstance(value, float):
        return {"t": "float", "v": repr(float(value))}
    if isinstance(value, str):
        return {"t": "str", "v": value}
    if isinstance(value, bytes):
        return {"t": "bytes", "v": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        items = []
        for key, child in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: dict keys must be str, got {type(key).__name__} {key!r}")
            items.append([key, _encode(child, [*path, escape_segment(key)], f"{where}[{key!r}]", arrays)])
        return {"t": "dict", "items": items}
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        if type(value) not in (list, tuple):
            raise TypeError(f"{where}: {type(value).__name__} is not a plain list or tuple")
        children = [_encode(child, [*path, str(i)], f"{where}[{i}]", arrays) for i, child in enumerate(value)]
        return {"t": kind, "items": children}
    raise TypeError(f"{where}: cannot store a {type(value).__module__}.{type(value).__qualname__} without pickle")


def _decode(node: Skeleton, arrays: Mapping[str, Any]) -> Any:
    kind = node["t"]
    if kind == "none":
        return None
    if kind == "bool":
        return bool(node["v"])
    if kind == "int":
        return int(node["v"])
    if kind == "float":
        return float(node["v"])
    if kind == "str":
        return node["v"]
    if kind == "bytes":
        return base64.b64decode(node["v"])
    if kind == "npscalar":
        dtype = np.lib.format.descr_to_dtype(_descr(node["dtype"]))
        return np.frombuffer(bytes.fromhex(node["v"]), dtype=dtype)[0]
    if kind == "array":
        return arrays[node["path"]]
    if kind == "dict":
        return {k: _decode(c, arrays) for k, c in node["items"] if _present(c, arrays)}
    if kind in ("list", "tuple"):
        children = [_decode(c, arrays) for c in node["items"] if _present(c, arrays)]
        return tuple(children) if kind == "tuple" else children
    raise ValueError(f"unknown skeleton node type {kind!r}")


def _present(node: Skeleton, arrays: Mapping[str, Any]) -> bool:
    """A node survives a `select=` read unless it is an array that was not read, or holds only such."""
    if node["t"] == "array":
        return node["path"] in arrays
    return True


def _descr(descr: Any) -> Any:
    """JSON turns the tuples of a structured dtype description into lists; turn them back."""
    if isinstance(descr, list):
        return [tuple(_descr(x) for x in field) if isinstance(field, list) else field for field in descr]
    return descr
