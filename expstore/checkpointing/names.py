"""Names and argument checks of checkpoints, shared by the manager and the CLI (one pattern, one place).

    <exp>_iter_<iteration:06d>.ckpt                      one checkpoint (one object, or a tree on HDF5 / Zarr)
    <exp>_iter_<iteration:06d>/manifest.json             a sharded checkpoint (the key the index names)
    <exp>_iter_<iteration:06d>/shard-<r>-of-<n>.ckpt     rank r's shard of a sharded checkpoint
    <exp>_index.json                                     the index of an experiment

A ref is the URL of one checkpoint: its store's URL joined with its key.
"""

from __future__ import annotations

import json
import operator
import re
from typing import Any

from ..format.strict_json import check_json_dict
from ..store.locate import split_url_at

__all__ = [
    "CKPT_RE",
    "INDEX_RE",
    "MANIFEST",
    "check_iteration",
    "checkpoint_folder",
    "checkpoint_key",
    "index_key",
    "is_checkpoint_part",
    "is_manifest_key",
    "manifest_key",
    "orphan_keys",
    "positive_int_or_none",
    "shard_name",
    "split_checkpoint_url",
    "strict_json_metadata",
]

MANIFEST = "manifest.json"
CKPT_RE = re.compile(r"^(?P<exp>[^/]+)_iter_(?P<it>\d+)(?:\.ckpt|/manifest\.json)$")  # one object | sharded
INDEX_RE = re.compile(r"^(?P<exp>[^/]+)_index\.json$")
# Any object of a checkpoint, under any folder: the object itself, a sharded one's manifest or shards.
_PART_RE = re.compile(r"(?:^|/)[^/]+_iter_\d+(?:\.ckpt|/manifest\.json|/shard-\d+-of-\d+\.ckpt)$")


def checkpoint_key(experiment: str, iteration: int) -> str:
    """The key of the single-object checkpoint of `iteration`."""
    return f"{experiment}_iter_{iteration:06d}.ckpt"


def checkpoint_folder(experiment: str, iteration: int) -> str:
    """The folder holding the shards and manifest of one sharded checkpoint."""
    return f"{experiment}_iter_{iteration:06d}"


def manifest_key(experiment: str, iteration: int) -> str:
    """The key of a sharded checkpoint, as the index names it."""
    return f"{checkpoint_folder(experiment, iteration)}/{MANIFEST}"


def shard_name(rank: int, world_size: int) -> str:
    """The object name of rank `rank`'s shard inside the checkpoint folder."""
    return f"shard-{rank}-of-{world_size}.ckpt"


def index_key(experiment: str) -> str:
    """The key of the index of `experiment`."""
    return f"{experiment}_index.json"


def is_manifest_key(key: str) -> bool:
    """True when `key` names a sharded checkpoint (its manifest)."""
    return key.endswith("/" + MANIFEST)


def is_checkpoint_part(key: str) -> bool:
    """True when `key` is an object of a checkpoint (reached through its index, not a plain file)."""
    return _PART_RE.search(key) is not None


def orphan_keys(keys: list[str], named: set[str], experiment: str) -> list[str]:
    """The checkpoint objects of `experiment` among `keys` that no index entry in `named` accounts
    for: sharded-checkpoint folders whose manifest is not named, then single objects not named."""
    folder = re.compile(re.escape(experiment) + r"_iter_\d+/")
    found = [k for k in keys if (m := folder.match(k)) and f"{m.group(0)}{MANIFEST}" not in named]
    for key in keys:
        m = CKPT_RE.match(key)
        if m and m["exp"] == experiment and key not in named and "/" not in key:
            found.append(key)
    return found


def split_checkpoint_url(ref: str) -> tuple[str, str]:
    """Split the URL of one checkpoint into (store URL, key); `ValueError` unless it is one."""
    text = ref.rstrip("/")
    segments = 2 if is_manifest_key(text) else 1
    try:
        base, key = split_url_at(text, segments)
    except ValueError:
        base, key = "", ""
    if text[: len(text) - len(key)] in ("", "/") or not CKPT_RE.match(key):
        raise ValueError(f"{ref!r} is not the URL of a checkpoint (…/<exp>_iter_<n>.ckpt or …/<exp>_iter_<n>/manifest.json)")
    return base, key


def check_iteration(value: object, what: str = "iteration", minimum: int | None = 0) -> int:
    """`value` as a plain int (>= `minimum` unless None): any integral number (int, numpy integer:
    `operator.index`) but a bool; `TypeError` / `ValueError` naming `what` otherwise."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise TypeError(f"{what} must be an integral number, got the bool {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be an integral number, got {type(value).__name__} {value!r}") from None
    if minimum is not None and number < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {number}")
    return number


def positive_int_or_none(value: object, what: str) -> int | None:
    """`value` if it is an int >= 1 or None, else `ValueError` naming `what`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an int >= 1 or None, got {value!r}")
    return value


def strict_json_metadata(metadata: Any) -> dict[str, Any]:
    """A plain copy of checkpoint metadata (None: empty), which must be a dict of strict JSON:
    `TypeError` names the offending field."""
    if metadata is None:
        return {}
    check_json_dict(metadata, "metadata")
    return json.loads(json.dumps(metadata))  # a private, plain copy (tuples become lists)
