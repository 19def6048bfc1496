"""Runs written the way the original `src.*` modules wrote them, before expstore: plain pandas and json, no expstore.

Legacy layout: ``<section>_<TS>_<model>.pkl`` (DataFrame without attrs, optionally also
``.parquet``) and ``<section>_<TS>_meta.json`` holding every piece of metadata, derivable or not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

LEGACY_META = {
    "epochs": 10,
    "device": "cpu",
    "grids": [3, 5],
    "num_datasets": 2,
    "dataset_names": ["poisson_2d_sin", "poisson_2d_poly"],
    "lbfgs_threshold_time": 45.2,
}


def legacy_frames() -> dict[str, pd.DataFrame]:
    """Two model types' results as the original training loops produced them."""
    rows = [
        {"dataset_idx": d, "dataset_name": name, "grid_size": g, "epoch": e, "train_loss": 1.0 / (1 + e + g), "test_loss": 2.0 / (1 + e)}
        for d, name in enumerate(LEGACY_META["dataset_names"])
        for g in LEGACY_META["grids"]
        for e in range(3)
    ]
    return {"adam": pd.DataFrame(rows), "lbfgs": pd.DataFrame(rows).assign(train_loss=lambda f: f.train_loss / 2)}


def write_legacy_run(
    folder: Path,
    section: str = "section2_1",
    timestamp: str = "20240101_120000",
    meta: dict[str, Any] | None = None,
    wrapped: bool = False,
    with_parquet: bool = False,
) -> dict[str, pd.DataFrame]:
    """Write one legacy run into `folder` (``{"meta": {...}}`` when `wrapped`, as section 1 did); return its frames."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = legacy_frames()
    for model_type, df in frames.items():
        df.to_pickle(folder / f"{section}_{timestamp}_{model_type}.pkl")
        if with_parquet:
            df.to_parquet(folder / f"{section}_{timestamp}_{model_type}.parquet")
    doc = dict(LEGACY_META if meta is None else meta)
    with open(folder / f"{section}_{timestamp}_meta.json", "w") as f:
        json.dump({"meta": doc} if wrapped else doc, f)
    return frames
