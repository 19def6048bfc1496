"""The check that a dict is strict JSON (what checkpoint manifests and index entries hold)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .tree import check_structure

__all__ = ["check_json_dict"]


def check_json_dict(value: Any, name: str) -> None:
    """`value` must be None or a dict of strict JSON (str keys; finite floats; no cycle);
    `TypeError` names the field (`metadata['lr'][0]`)."""
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, got {type(value).__name__}")
    check_structure(value, name)
    stack: list[tuple[Any, str]] = [(value, name)]
    while stack:
        item, where = stack.pop()
        if item is None or isinstance(item, (bool, str, int)):
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                raise TypeError(f"{where}: {item!r} is not JSON (only finite floats are)")
            continue
        if isinstance(item, Mapping):
            for k, v in item.items():
                if not isinstance(k, str):
                    raise TypeError(f"{where}: JSON object keys must be str, got {type(k).__name__} {k!r}")
                stack.append((v, f"{where}[{k!r}]"))
            continue
        if isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
            continue
        raise TypeError(f"{where}: a {type(item).__module__}.{type(item).__qualname__} is not JSON")
