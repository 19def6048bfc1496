"""expstore.runs: runs with DataFrame.attrs on every store, checkpoint metadata, legacy runs, bad input."""

from __future__ import annotations

import math
import pickle
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from expstore import KeyNotFound, open_store
from expstore.runs import (
    DerivableMetadataWarning,
    derive_metadata,
    list_runs,
    load_checkpoint_metadata,
    load_run,
    load_run_checkpoint,
    migrate_legacy_runs,
    save_run,
)

from .conftest import FACADE_BACKENDS
from .legacy_fixtures import LEGACY_META, legacy_frames, write_legacy_run

STORE_BACKENDS = FACADE_BACKENDS
TS = re.compile(r"^\d{8}_\d{6}$")


def results() -> dict[str, pd.DataFrame]:
    return {"adam": legacy_frames()["adam"], "kan_pruning": legacy_frames()["lbfgs"]}


def checkpoints(with_models: bool = True) -> dict[str, Any]:
    """The two-checkpoint structure of a run: {model_type: {dataset: {name: {model, metrics...}}}}."""
    out: dict[str, Any] = {}
    for model_type in ("adam", "kan_pruning"):
        for dataset in (0, "extra"):
            for name, epoch in (("at_threshold", 4), ("final", 9)):
                entry: dict[str, Any] = {"epoch": epoch, "time": 1.5 * epoch, "dense_mse": np.float64(1e-3 / epoch), "test_loss": math.nan}
                if with_models:
                    entry["model"] = {"w": np.full((2, 3), epoch, np.float32), "b": np.arange(3)}
                out.setdefault(model_type, {}).setdefault(dataset, {})[name] = entry
    return out


def names(folder: Path) -> list[str]:
    """The files in `folder`, without the local store's lock file."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".expstore-"))


def options(location: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {"storage_options": location[1]}


def test_save_and_load_a_pkl_run(store_location: tuple[str, dict[str, Any]]) -> None:
    url, _ = store_location
    given = results()
    ts = save_run(given, "section2_1", url, checkpoints=checkpoints(), epochs=10, device="cpu",
                  lbfgs_threshold_time=45.2, **options(store_location))
    assert TS.match(ts)
    with open_store(url, **store_location[1]) as store:
        keys = store.list()
    base = f"section2_1_{ts}_e10"
    assert {f"{base}_adam.pkl", f"{base}_kan_pruning.pkl", f"{base}_checkpoint_metadata.pkl"} <= set(keys)
    assert f"{base}_adam_0_final_index.json" in keys

    loaded, meta = load_run("section2_1", ts, url, **options(store_location))
    assert sorted(loaded) == ["adam", "kan_pruning"]
    for model_type, df in loaded.items():
        pd.testing.assert_frame_equal(df, given[model_type])
        assert df.attrs == {"section": "section2_1", "timestamp": ts, "model_type": model_type, "epochs": 10,
                            "device": "cpu", "lbfgs_threshold_time": 45.2}
    assert meta == {"section": "section2_1", "timestamp": ts, "epochs": 10, "device": "cpu", "lbfgs_threshold_time": 45.2}

    metrics = load_checkpoint_metadata("section2_1", ts, url, **options(store_location))
    assert metrics["adam"][0]["final"]["epoch"] == 9 and "model" not in metrics["adam"][0]["final"]
    assert set(metrics["kan_pruning"]) == {0, "extra"}
    weights = load_run_checkpoint("section2_1", ts, url, "kan_pruning", "extra", "at_threshold", **options(store_location))
    assert weights["iteration"] == 4
    np.testing.assert_array_equal(weights["state"]["w"], np.full((2, 3), 4, np.float32))
    assert list_runs(url, **options(store_location)) == [
        {"section": "section2_1", "timestamp": ts, "epochs": 10, "model_types": ["adam", "kan_pruning"], "legacy": False}
    ]


def test_parquet_run_needs_no_pickle(store_location: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = store_location
    ts = save_run(results(), "s3", url, checkpoints=checkpoints(with_models=False), format="parquet",
                  device="cuda:0", seed=np.int64(7), **options(store_location))
    with open_store(url, **store_location[1]) as store:
        assert sorted(store.list()) == [f"s3_{ts}_adam.parquet", f"s3_{ts}_checkpoint_metadata.json", f"s3_{ts}_kan_pruning.parquet"]
    monkeypatch.setattr(pickle, "loads", None)  # nothing may unpickle
    monkeypatch.setattr(pd, "read_pickle", None)
    loaded, meta = load_run("s3", ts, url, **options(store_location))
    pd.testing.assert_frame_equal(loaded["adam"], results()["adam"])
    assert loaded["adam"].attrs["model_type"] == "adam" and meta["seed"] == 7 and "epochs" not in meta
    metrics = load_checkpoint_metadata("s3", ts, url, **options(store_location))
    assert metrics["adam"][0]["at_threshold"]["dense_mse"] == pytest.approx(2.5e-4)
    assert math.isnan(metrics["adam"]["extra"]["final"]["test_loss"])


# ---- decisions -----------------------------------------------------------------------------------


def test_derivable_metadata_warns_and_is_derived(tmp_path: Path) -> None:
    with pytest.warns(DerivableMetadataWarning, match=r"\['dataset_names', 'grids', 'num_datasets'\]"):
        ts = save_run(results(), "sec", tmp_path, epochs=3, grids=[3, 5], num_datasets=2, dataset_names=["a"])
    loaded, meta = load_run("sec", ts, tmp_path)
    assert not {"grids", "num_datasets", "dataset_names"} & set(meta)
    assert derive_metadata(loaded["adam"]) == {
        "grids": [3, 5], "num_datasets": 2, "dataset_names": ["poisson_2d_poly", "poisson_2d_sin"]
    }
    assert derive_metadata(loaded)["num_datasets"] == 2 and derive_metadata(pd.DataFrame({"x": [1]})) == {}


def test_callers_frames_untouched_and_same_second_runs_kept(tmp_path: Path) -> None:
    given = results()
    given["adam"].attrs["note"] = "mine"
    first = save_run(given, "sec", tmp_path, epochs=1)
    second = save_run(given, "sec", tmp_path, epochs=1)
    assert first != second and given["adam"].attrs == {"note": "mine"}
    assert load_run("sec", first, tmp_path)[0]["adam"].attrs["note"] == "mine"
    assert [r["timestamp"] for r in list_runs(tmp_path)] == sorted([first, second])


# ---- legacy runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [False, True])
def test_legacy_run_loads_like_a_new_one(tmp_path: Path, wrapped: bool) -> None:
    frames = write_legacy_run(tmp_path, wrapped=wrapped, with_parquet=True)
    loaded, meta = load_run("section2_1", "20240101_120000", tmp_path)
    assert meta == {**LEGACY_META, "section": "section2_1", "timestamp": "20240101_120000"}
    for model_type, df in loaded.items():
        pd.testing.assert_frame_equal(df, frames[model_type])
        assert df.attrs == {"epochs": 10, "device": "cpu", "lbfgs_threshold_time": 45.2, "section": "section2_1",
                            "timestamp": "20240101_120000", "model_type": model_type}
    assert list_runs(tmp_path)[0]["legacy"] is True

    memory = f"memory://legacy-{uuid.uuid4().hex}"  # the same bytes on another store
    with open_store(memory) as store:
        for path in tmp_path.iterdir():
            store.write(path.name, path.read_bytes())
    assert load_run("section2_1", "20240101_120000", memory)[1] == meta


def test_migrate_legacy_runs(tmp_path: Path) -> None:
    frames = write_legacy_run(tmp_path)
    before = names(tmp_path)
    plan = migrate_legacy_runs(tmp_path)  # dry run
    assert names(tmp_path) == before
    base = "section2_1_20240101_120000"
    assert plan == [{"section": "section2_1", "timestamp": "20240101_120000",
                     "write": [f"{base}_e10_adam.pkl", f"{base}_e10_lbfgs.pkl"],
                     "delete": [f"{base}_adam.pkl", f"{base}_lbfgs.pkl", f"{base}_meta.json"]}]
    assert migrate_legacy_runs(tmp_path, dry_run=False) == plan
    assert names(tmp_path) == plan[0]["write"]
    loaded, meta = load_run("section2_1", "20240101_120000", tmp_path)
    pd.testing.assert_frame_equal(loaded["adam"], frames["adam"])
    assert meta == {"epochs": 10, "device": "cpu", "lbfgs_threshold_time": 45.2, "section": "section2_1", "timestamp": "20240101_120000"}
    assert migrate_legacy_runs(tmp_path, dry_run=False) == []

    shutil.rmtree(tmp_path / "in-place", ignore_errors=True)  # no epochs: the same names, rewritten in place
    write_legacy_run(tmp_path / "in-place", meta={"device": "cpu"})
    (done,) = migrate_legacy_runs(tmp_path / "in-place", dry_run=False)
    assert done["delete"] == [f"{base}_meta.json"]
    assert load_run("section2_1", "20240101_120000", tmp_path / "in-place")[0]["lbfgs"].attrs["device"] == "cpu"


# ---- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda d: save_run([1], "s", d), TypeError, "dict {model_type: DataFrame}"),
        (lambda d: save_run({"adam": [{"a": 1}]}, "s", d), TypeError, r"results\['adam'\] must be a pandas DataFrame"),
        (lambda d: save_run(results(), "a/b", d), ValueError, "invalid section 'a/b'"),
        (lambda d: save_run(results(), "s", d, format="csv"), ValueError, "format must be one of"),
        (lambda d: save_run(results(), "s", d, epochs="10"), ValueError, "epochs must be an int"),
        (lambda d: save_run(results(), "s", d, timestamp="x"), TypeError, "sets 'timestamp' itself"),
        (lambda d: save_run(results(), "s", d, device=object()), TypeError, "metadata 'device' must be JSON data"),
        (lambda d: save_run(results(), "s", d, checkpoints={"adam": {0: {"final": 3}}}), TypeError,
         r"checkpoints\['adam'\]\[0\]\['final'\] must be a dict"),
        (lambda d: save_run({"checkpoint_metadata": pd.DataFrame()}, "s", d), ValueError, "cannot be a model type"),
        # without epochs, s_<TS>_e3_mlp.pkl would read back as epochs=3, model type 'mlp'
        (lambda d: save_run({"e3_mlp": pd.DataFrame({"a": [1]})}, "s", d), ValueError, "model type 'e3_mlp' would read back"),
        (lambda d: save_run(results(), "s", d, checkpoints={"e3_mlp": {0: {"final": {"acc": 1.0}}}}), ValueError,
         "model type 'e3_mlp' would read back"),
        (lambda d: load_run("s", "2024", d), ValueError, "timestamp must look like"),
        (lambda d: load_run("nope", "20240101_120000", d), KeyNotFound, "no run of section 'nope'"),
    ],
)
def test_bad_input(tmp_path: Path, call: Any, error: type[Exception], message: str) -> None:
    write_legacy_run(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with warnings.catch_warnings(), pytest.raises(error, match=message):
        call(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_unstorable_weights_write_no_run(tmp_path: Path) -> None:
    bad = {"adam": {0: {"final": {"epoch": 1, "model": {"fn": print}}}}}
    with pytest.raises(TypeError, match="fn"):
        save_run(results(), "s", tmp_path, checkpoints=bad)
    assert list_runs(tmp_path) == []


def test_model_type_that_looks_like_an_epochs_part_round_trips_with_epochs(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2]})
    ts = save_run({"e3_mlp": frame}, "s", tmp_path, epochs=10)
    loaded, meta = load_run("s", ts, tmp_path)
    assert list(loaded) == ["e3_mlp"] and meta["epochs"] == 10
    assert [r["model_types"] for r in list_runs(tmp_path)] == [["e3_mlp"]]
