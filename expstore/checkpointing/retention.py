"""Which checkpoints a commit keeps.

Retention keeps the `keep_last_n` highest iterations (all when None), every tagged checkpoint (any
tag pins, e.g. ``"final"``, ``"at_threshold"``), the `keep_best_n` best by ``metadata[metric]``
(entries without that metric are no candidates), the newest checkpoint, and the iterations in
`protect` (the checkpoint a manager last loaded: the one a run resumed from).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["select_retained"]


def select_retained(
    entries: list[dict[str, Any]],
    keep_last_n: int | None,
    keep_best_n: int | None = None,
    metric: str | None = None,
    mode: str = "min",
    protect: frozenset[int] = frozenset(),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split index entries into (kept, dropped) by the retention rules of this module."""
    if keep_last_n is None or not entries:
        return list(entries), []
    by_iter = sorted(entries, key=lambda e: e["iteration"])
    keep = {e["iteration"] for e in by_iter[-keep_last_n:]}
    keep.add(by_iter[-1]["iteration"])
    keep |= {e["iteration"] for e in by_iter if e.get("tags")}
    keep |= set(protect)
    if keep_best_n and metric:
        scored = [e for e in by_iter if _score(e, metric) is not None]
        scored.sort(key=lambda e: _score(e, metric), reverse=(mode == "max"))
        keep |= {e["iteration"] for e in scored[:keep_best_n]}
    kept = [e for e in by_iter if e["iteration"] in keep]
    dropped = [e for e in by_iter if e["iteration"] not in keep]
    return kept, dropped


def _score(entry: Mapping[str, Any], metric: str) -> float | None:
    """The entry's value of `metric` as a float; None when it has no such number."""
    value = (entry.get("metadata") or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
