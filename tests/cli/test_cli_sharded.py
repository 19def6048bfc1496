"""Every `expstore` command on a healthy sharded checkpoint history (two ranks), local and S3 (moto)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expstore import open_store
from expstore.checkpointing import CheckpointManager
from expstore.experiment_logger import ExperimentLogger

from ..workers.sharding_workers import global_array, rank_state
from .test_cli import cli, where  # noqa: F401 - `where` is a fixture

EXP = "exp001"


def save_sharded(url: str, options: dict[str, Any], iterations: tuple[int, ...] = (1, 2), ranks: tuple[int, ...] = (0, 1)) -> None:
    """Ranks `ranks` of a world of two save each of `iterations` (one process, one manager per rank)."""
    managers = [CheckpointManager(url, EXP, keep_last_n=None, rank=r, world_size=2, **options) for r in ranks]
    try:
        for it in iterations:
            for m in managers:
                m.save_checkpoint(rank_state(it, m.rank, 2), it, {"loss": 1.0 / it}, tag="final" if it == 2 else None)
    finally:
        for m in managers:
            m.close()


@pytest.fixture
def history(where: Any) -> tuple[str, tuple[str, ...], dict[str, Any]]:  # noqa: F811
    """A run `exp001` under a fresh root: sharded checkpoints 1 and 2 and a finished log."""
    root, opts, storage = where
    save_sharded(f"{root}/{EXP}/checkpoints", storage)
    with ExperimentLogger(EXP, f"{root}/{EXP}/logs", log_to_console=False, **storage) as log:
        log.log_metrics({"loss": 0.5}, step=1)
        log.finalize()
    return root, opts, storage


def test_verify_ls_show_on_a_sharded_history(history: Any, tmp_path: Path) -> None:
    root, opts, _ = history
    out = cli("verify", root, cwd=tmp_path, options=opts).stdout
    assert "2 file(s) checked, 0 bad" in out and "BAD" not in out
    ref = f"{root}/{EXP}/checkpoints/{EXP}_iter_000001/manifest.json"
    assert "1 file(s) checked, 0 bad" in cli("verify", ref, cwd=tmp_path, options=opts).stdout

    listing = cli("ls", root, cwd=tmp_path, options=opts).stdout
    assert "the index does not name" not in listing and f"{EXP}_iter_" not in listing.split("checkpoints", 1)[0]
    doc = json.loads(cli("ls", root, "--json", cwd=tmp_path, options=opts).stdout)
    assert [r["name"] for r in doc["runs"]] == [EXP]  # no run made of a checkpoint's folder
    history_doc = doc["runs"][0]["checkpoints"][0]
    assert [e["iteration"] for e in history_doc["entries"]] == [1, 2] and history_doc["orphans"] == []
    assert all(e["size"] > 2 * global_array(1).nbytes // 2 for e in history_doc["entries"])  # every shard counted
    assert doc["runs"][0]["other"] == []

    latest = json.loads(cli("show", root, "--json", cwd=tmp_path, options=opts).stdout)
    assert [d["iteration"] for d in latest] == [2] and latest[0]["tags"] == ["final"]
    one = json.loads(cli("show", ref, "--json", cwd=tmp_path, options=opts).stdout)
    assert one["iteration"] == 1 and one["metadata"] == {"loss": 1.0}
    leaves = {leaf["path"]: leaf for leaf in one["leaves"]}
    assert leaves["model/w"]["kind"] == "array" and leaves["step"]["value"] == 1
    assert "exp001_iter_000001" in cli("show", ref, cwd=tmp_path, options=opts).stdout

    logs = json.loads(cli("logs", root, "--json", cwd=tmp_path, options=opts).stdout)
    assert logs["logs"][0]["analysis"]["final_status"] == "completed"


def test_gc_dry_run_and_ls_agree_on_a_sharded_orphan(history: Any, tmp_path: Path) -> None:
    root, opts, storage = history
    assert "0 unindexed" in cli("gc", root, "--dry-run", cwd=tmp_path, options=opts).stdout
    save_sharded(f"{root}/{EXP}/checkpoints", storage, iterations=(3,), ranks=(0,))  # rank 1 never saved 3
    doc = json.loads(cli("ls", root, "--json", cwd=tmp_path, options=opts).stdout)
    orphans = doc["runs"][0]["checkpoints"][0]["orphans"]
    assert orphans == [f"{EXP}_iter_000003/shard-0-of-2.ckpt"]
    dry = cli("gc", root, "--dry-run", cwd=tmp_path, options=opts).stdout
    assert "1 unindexed checkpoint object(s) to delete" in dry and orphans[0] in dry
    assert "+ 1 object(s) the index does not name" in cli("ls", root, cwd=tmp_path, options=opts).stdout


def test_cp_of_a_sharded_history_to_local_and_to_hdf5(history: Any, tmp_path: Path) -> None:
    root, opts, storage = history
    src_ckpts = f"{root}/{EXP}/checkpoints"
    with CheckpointManager(src_ckpts, EXP, **storage) as m:  # what a load says (rank 0's shard)
        saved = {c["iteration"]: m.load_checkpoint(c)["timestamp"] for c in m.list_checkpoints()}

    out = cli("cp", root, str(tmp_path / "copy"), cwd=tmp_path, options=opts).stdout
    assert "copied 2 checkpoint(s)" in out and "verified 2 checkpoint(s)" in out and ": ok" in out
    with CheckpointManager(tmp_path / "copy" / EXP / "checkpoints", EXP, rank=1, world_size=2) as m:
        assert m.verify() == [] and [c["iteration"] for c in m.list_checkpoints()] == [1, 2]
        np.testing.assert_array_equal(m.load_checkpoint()["state"]["model"]["w"].local, rank_state(2, 1, 2)["model"]["w"].local)

    h5 = tmp_path / "copy.h5"
    out = cli("cp", root, str(h5), cwd=tmp_path, options=opts).stdout
    assert "verified 2 checkpoint(s)" in out and ": ok" in out and "0 file(s)" not in out.split("and", 1)[0]
    with open_store(str(h5)) as store:
        keys = store.list("")
    assert not [k for k in keys if "shard-" in k or "manifest.json" in k], keys  # no raw shards copied as files
    with CheckpointManager(f"{h5}/{EXP}/checkpoints", EXP) as m:
        listed = m.list_checkpoints()
        assert [c["iteration"] for c in listed] == [1, 2] and listed[1]["tags"] == ["final"]
        assert {c["iteration"]: c["timestamp"] for c in listed} == saved  # the saved timestamps, not the copy's
        np.testing.assert_array_equal(m.load_checkpoint()["state"]["model"]["w"], global_array(2))


def test_cp_of_one_sharded_checkpoint_and_of_a_folder_with_orphan_shards(history: Any, tmp_path: Path) -> None:
    root, opts, storage = history
    src_ckpts = f"{root}/{EXP}/checkpoints"
    save_sharded(src_ckpts, storage, iterations=(3,), ranks=(0,))  # rank 1 never saved 3: orphan shards
    ref = f"{src_ckpts}/{EXP}_iter_000001/manifest.json"
    out = cli("cp", ref, str(tmp_path / "one"), cwd=tmp_path, options=opts).stdout
    assert "copied 1 checkpoint(s)" in out and "and 0 file(s)" in out and "verified 1 checkpoint(s)" in out
    with CheckpointManager(tmp_path / "one", EXP, rank=0, world_size=2) as m:
        assert [c["iteration"] for c in m.list_checkpoints()] == [1] and m.verify() == []
        assert m.list_checkpoints()[0]["key"] == f"{EXP}_iter_000001/manifest.json"  # a sharded checkpoint there too
        np.testing.assert_array_equal(m.load_checkpoint()["state"]["model"]["w"].local, rank_state(1, 0, 2)["model"]["w"].local)

    out = cli("cp", src_ckpts, str(tmp_path / "folder"), cwd=tmp_path, options=opts).stdout
    assert "copied 2 checkpoint(s)" in out and "and 0 file(s)" in out  # the orphan shards are no plain files
    with open_store(str(tmp_path / "folder")) as store:
        assert not [k for k in store.list("") if "000003" in k]
