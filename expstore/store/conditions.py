"""The precondition check of a conditional write, with its messages, for every backend that checks one itself."""

from __future__ import annotations

from ..errors import PreconditionFailed

__all__ = ["check_condition"]


def check_condition(current_version: str | None, if_absent: bool, if_match: str | None, url: str, key: str) -> None:
    """Raise `PreconditionFailed` unless a write with `if_absent` / `if_match` may replace the value whose
    version is `current_version` (None: the key holds no value)."""
    if if_absent and current_version is not None:
        raise PreconditionFailed("if_absent: the key already holds a value", url=url, key=key)
    if if_match is not None and current_version != if_match:
        raise PreconditionFailed(f"if_match: version is {current_version!r}, expected {if_match!r}", url=url, key=key)
