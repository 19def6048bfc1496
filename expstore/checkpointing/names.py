"""Names and argument checks of checkpoints, shared by the manager and the CLI (one pattern, one place).

    <exp>_iter_<iteration:06d>.ckpt            one checkpoint (one object, or a tree on HDF5 / Zarr)
    <exp>_iter_<iteration:06d>/manifest.json   a sharded checkpoint (the key the index names)
    <exp>_index.json                           the index of an experiment
"""

from __future__ import annotations

import operator
import re

__all__ = ["CKPT_RE", "INDEX_RE", "check_iteration", "is_checkpoint_part", "positive_int_or_none"]

CKPT_RE = re.compile(r"^(?P<exp>[^/]+)_iter_(?P<it>\d+)(?:\.ckpt|/manifest\.json)$")  # one object | sharded
INDEX_RE = re.compile(r"^(?P<exp>[^/]+)_index\.json$")
# Any object of a checkpoint, under any folder: the object itself, a sharded one's manifest or shards.
_PART_RE = re.compile(r"(?:^|/)[^/]+_iter_\d+(?:\.ckpt|/manifest\.json|/shard-\d+-of-\d+\.ckpt)$")


def is_checkpoint_part(key: str) -> bool:
    """True when `key` is an object of a checkpoint (reached through its index, not a plain file)."""
    return _PART_RE.search(key) is not None


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
