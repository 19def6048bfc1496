"""Checks of what the export functions are given: `TypeError` naming what is wrong."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["check_export_metadata", "check_result_rows"]


def check_result_rows(results: Any) -> Sequence[Mapping[str, Any]]:
    """`results` must be a list (or tuple) of dicts; `TypeError` names what is not."""
    if not isinstance(results, (list, tuple)):
        hint = " (for a DataFrame use export_results_parquet, or df.to_dict('records'))" if hasattr(results, "to_dict") else ""
        raise TypeError(f"results must be a list of dicts, got {type(results).__name__}{hint}")
    for i, row in enumerate(results):
        if not isinstance(row, Mapping):
            raise TypeError(f"results must be a list of dicts, but results[{i}] is a {type(row).__name__}: {row!r:.80}")
    return results


def check_export_metadata(metadata: Any) -> Mapping[str, Any]:
    """`metadata` must be a dict or None (an empty dict then)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    return metadata
