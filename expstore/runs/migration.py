"""`migrate_legacy_runs`: legacy runs (``_meta.json`` beside attr-less DataFrames) rewritten into the attrs layout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..errors import CorruptData
from ..store.base import Store
from ..store.locate import opened_store
from .files import frame_bytes, legacy_metadata, read_frame
from .inputs import DERIVABLE, RESERVED, plain_json
from .layout import CHECKPOINT_METADATA, RunKeys, runs_in

__all__ = ["migrate_legacy_runs"]


def migrate_legacy_runs(
    output_dir: Any, dry_run: bool = True, *, storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rewrite legacy runs (``_meta.json``) into the attrs layout; return what was (or, with `dry_run`, would be) done.

    Each entry is ``{"section", "timestamp", "write": [keys], "delete": [keys]}``. New files are
    written and read back first; old files are deleted only when every new one reads back equal.
    Other files of the run (model weights) are left as they are.
    """
    with opened_store(output_dir, **dict(storage_options or {})) as store:
        plans = []
        for run in runs_in(store).values():
            if run.legacy_meta is None or not run.frames:
                continue
            plans.append(_migrate(store, run, dry_run))
        return plans


def _migrate(store: Store, run: RunKeys, dry_run: bool) -> dict[str, Any]:
    """Plan, and unless `dry_run` carry out, the rewrite of one legacy run."""
    legacy = legacy_metadata(store, run)
    essential = {k: plain_json(v, f"legacy metadata {k!r}") for k, v in legacy.items() if k not in DERIVABLE and k not in RESERVED}
    epochs = essential.get("epochs")
    new = RunKeys(run.section, run.timestamp, epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None)
    targets = {  # old key -> new key
        key: f"{new.base}_{model_type}.{key.rpartition('.')[2]}" for model_type, keys in run.frames.items() for key in keys
    }
    if run.checkpoint_metadata is not None:
        targets[run.checkpoint_metadata] = f"{new.base}_{CHECKPOINT_METADATA}.{run.checkpoint_metadata.rpartition('.')[2]}"
    old = sorted([*targets, run.legacy_meta])  # type: ignore[list-item]
    plan = {"section": run.section, "timestamp": run.timestamp, "write": sorted(targets.values()),
            "delete": [k for k in old if k not in targets.values()]}
    if dry_run:
        return plan
    expected: dict[str, pd.DataFrame] = {}
    for key, target in targets.items():
        if key == run.checkpoint_metadata:
            store.write(target, store.read(key))
            continue
        df = read_frame(store, key)
        model_type = next(m for m, keys in run.frames.items() if key in keys)
        df.attrs = {**essential, "section": run.section, "timestamp": run.timestamp, "model_type": model_type}
        store.write(target, frame_bytes(df, "." + key.rpartition(".")[2]))
        expected[target] = df
    for key, df in expected.items():
        back = read_frame(store, key)
        try:
            pd.testing.assert_frame_equal(back, df)
        except AssertionError as exc:
            raise CorruptData(f"migrated DataFrame reads back different; old files kept: {exc}", url=store.url, key=key) from None
        if back.attrs != df.attrs:
            raise CorruptData("migrated DataFrame reads back with other attrs; old files kept", url=store.url, key=key)
    for key in plan["delete"]:
        store.delete(key)
    return plan
