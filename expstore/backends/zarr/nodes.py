"""Where a ZarrStore keeps what: node names of keys and array paths, and the pointer in a key's `zarr.json`.

A key `runs/k` is the group node `runs/k`; its `zarr.json` attributes hold the pointer
{"expstore": {"kind", "live", "size"}}, whose `live` token names the child `v-<token>` that holds
the value. The token starts with the hex nanosecond time of the write that made it.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "CHILD_PREFIX",
    "META",
    "POINTER_ATTRIBUTE",
    "TEMP_SUFFIX",
    "child_of",
    "group_doc",
    "join",
    "key_of",
    "live_of",
    "node_of",
    "pointer_of",
    "token_time",
]

POINTER_ATTRIBUTE = "expstore"  # the attribute of a key's group that makes it an expstore key (the pointer)
META = "zarr.json"
CHILD_PREFIX = "v-"
TEMP_SUFFIX = ".expstore-tmp"  # a pointer being written on local disk, before its rename


def join(*parts: str) -> str:
    """Node paths joined with `/`, empty ones (the root) left out."""
    return "/".join(p for p in parts if p)


def _node_name(segment: str) -> str:
    """A key or array-path segment as a zarr node name: only `zarr.json` itself (and its %-prefixed
    forms, to stay reversible) would clash with zarr's metadata documents, so they get one more `%`."""
    return "%" + segment if segment.lstrip("%") == META else segment


def _segment_of(name: str) -> str:
    return name[1:] if name.startswith("%") and name.lstrip("%") == META else name


def node_of(path: str) -> str:
    """The zarr node of an expstore key, or of an array path inside a tree."""
    return "/".join(_node_name(s) for s in path.split("/"))


def key_of(node: str) -> str:
    """The expstore key a zarr node stands for (`node_of` undone)."""
    return "/".join(_segment_of(s) for s in node.split("/"))


def child_of(pointer: dict[str, Any]) -> str:
    """The name of the child node that holds the pointer's live version."""
    return CHILD_PREFIX + pointer["live"]


def token_time(token: str) -> int:
    """The nanosecond time a version token was made (0 for a name that is no token)."""
    try:
        return int(token.partition("-")[0], 16)
    except ValueError:
        return 0


def pointer_of(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pointer in a node's parsed `zarr.json`; None when the node is not an expstore key."""
    if meta is None or meta.get("node_type") != "group":
        return None
    pointer = (meta.get("attributes") or {}).get(POINTER_ATTRIBUTE)
    return pointer if isinstance(pointer, dict) and "live" in pointer else None


def live_of(pointer: dict[str, Any] | None) -> str | None:
    """The live version token a pointer names; None for no pointer (the key holds no value)."""
    return None if pointer is None else pointer["live"]


def group_doc(pointer: dict[str, Any] | None) -> bytes:
    """The `zarr.json` of a group: a key's, carrying `pointer`, or a plain one (`None`)."""
    attributes = {} if pointer is None else {POINTER_ATTRIBUTE: pointer}
    return json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes}, indent=2).encode()
