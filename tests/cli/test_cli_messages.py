"""Messages and refusals of the command line and the export loaders: each names the bad thing."""

from __future__ import annotations

import fractions

import numpy as np
import pytest

from expstore import errors
from expstore.checkpointing import CheckpointManager
from expstore.data_export import load_results_json
from expstore.format import checkpoint as codec

from .test_cli import SMALL, cli


def test_pickle_not_allowed_lives_in_errors_and_the_old_path_still_works():
    assert errors.PickleNotAllowed is codec.PickleNotAllowed
    assert issubclass(errors.PickleNotAllowed, errors.StoreError)


def test_load_results_json_of_a_checkpoint_names_the_file(tmp_path):
    with CheckpointManager(tmp_path, "exp") as m:
        m.save_checkpoint({"w": np.arange(3)}, 1)
    with pytest.raises(errors.CorruptData, match=r"not a JSON export.*exp_iter_000001\.ckpt"):
        load_results_json(tmp_path / "exp_iter_000001.ckpt")


@pytest.mark.parametrize("src, dst", [("runs", "runs/exp001/sub"), ("runs", "./runs/"), ("runs", "{tmp}/runs/exp001")])
def test_cp_refuses_to_copy_a_root_into_itself(tmp_path, src, dst):
    dst = dst.format(tmp=tmp_path)
    cli("demo", "--url", "runs", *SMALL, cwd=tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*"))
    done = cli("cp", src, dst, cwd=tmp_path, expect=2)
    assert repr(src) in done.stderr and repr(dst) in done.stderr
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*")) == before


def test_cp_of_a_pickled_checkpoint_into_hdf5_does_not_suggest_a_missing_flag(tmp_path):
    with CheckpointManager(tmp_path / "src", "exp", allow_pickle=True) as m:
        m.save_checkpoint({"frac": fractions.Fraction(1, 3)}, 1)
    done = cli("cp", "src", "dst.h5", cwd=tmp_path, expect=2)
    assert "never unpickles" in done.stderr and "bytes stores" in done.stderr
    assert "pass allow_pickle=True" not in done.stderr
    out = cli("cp", "src", "dst", cwd=tmp_path).stdout  # between bytes stores it copies the bytes unread
    assert "copied 1 checkpoint(s)" in out


@pytest.mark.s3
def test_demo_next_hint_keeps_the_endpoint(tmp_path, moto_server):
    from ..conftest import unique

    root = f"s3://cli-{unique()}/runs"
    out = cli("demo", "--url", root, *SMALL, cwd=tmp_path, options=("--endpoint-url", moto_server.endpoint_url)).stdout
    hint = [line for line in out.splitlines() if line.startswith("next:")][0]
    assert hint.count(f"--endpoint-url {moto_server.endpoint_url} {root}") == 4
    ls_cmd = hint.split("   ")[0].removeprefix("next: expstore ").split()
    assert "run exp001" in cli(*ls_cmd, cwd=tmp_path).stdout  # the hint works as printed
