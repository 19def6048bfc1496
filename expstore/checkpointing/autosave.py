"""`AutoCheckpoint`: save a checkpoint when a training block dies (exception) or is preempted (signal)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .names import check_iteration

if TYPE_CHECKING:
    from .manager import CheckpointManager

__all__ = ["AutoCheckpoint"]


class AutoCheckpoint:
    """Context manager that saves a checkpoint when the block exits with an exception or the
    process gets SIGTERM / SIGINT (the preemption signals clouds send), then re-raises / exits.

    `get_state()` returns either the state dict itself (the plain form: the iteration is
    ``state["iteration"]`` when present, else the highest saved iteration + 1, or 0 when none is
    saved) or a tuple ``(state, iteration)`` / ``(state, iteration, metadata)``. The saved
    checkpoint's metadata gets ``"reason"`` ("exception: ValueError", "signal: SIGTERM").
    After a signal: SIGINT raises `KeyboardInterrupt`, SIGTERM raises ``SystemExit(128 + 15)``
    (exit status 143, as if killed). Signal handlers are installed only from the main thread; the
    previous handlers are restored on exit.
    """

    def __init__(
        self,
        manager: CheckpointManager,
        get_state: Callable[[], Any],
        *,
        signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
        tag: str | None = None,
    ):
        self.manager, self.get_state, self.signals, self.tag = manager, get_state, tuple(signals), tag
        self.saved_ref: str | None = None
        self._previous: dict[int, Any] = {}

    def save(self, reason: str) -> str | None:
        """Save the state `get_state()` returns now (once per context); return its ref."""
        if self.saved_ref is not None:
            return self.saved_ref
        state, iteration, metadata = self._unpack(self.get_state())
        meta = dict(metadata or {})
        meta["reason"] = reason
        self.saved_ref = self.manager.save_checkpoint(state, iteration, meta, tag=self.tag, blocking=True)
        return self.saved_ref

    def _unpack(self, got: Any) -> tuple[Any, int, Mapping[str, Any] | None]:
        """(state, iteration, metadata) from what `get_state()` returned, in either of its forms."""
        if isinstance(got, Mapping):
            if "iteration" in got:
                return got, check_iteration(got["iteration"], "get_state()['iteration']"), None
            saved = self.manager.list_checkpoints()
            return got, (saved[-1]["iteration"] + 1 if saved else 0), None
        if isinstance(got, (tuple, list)) and len(got) in (2, 3):
            state, iteration, *rest = got
            return state, check_iteration(iteration, "the iteration get_state() returned"), (rest[0] if rest else None)
        raise TypeError(
            "get_state() must return the state dict or a tuple (state, iteration[, metadata]), "
            f"got {type(got).__name__}"
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._restore()
        try:
            self.save(f"signal: {signal.Signals(signum).name}")
        finally:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> AutoCheckpoint:
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._restore()
        if exc_type is not None and self.saved_ref is None:
            self.save(f"exception: {exc_type.__name__}")
        return False
