"""The `expstore` command, run as a subprocess (`python -m expstore`), on local disk, S3 (moto), HDF5 and Zarr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from expstore import open_store
from expstore.checkpointing import CheckpointManager

from ..conftest import unique
from ..s3servers import ACCESS_KEY, SECRET_KEY, S3Server

SMALL = ["--iterations", "300", "--samples", "64"]
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}


def cli(*args: str, cwd: Path, options: tuple[str, ...] = (), expect: int | None = 0) -> subprocess.CompletedProcess:
    """Run `python -m expstore [options] args...`; check its exit status unless `expect` is None."""
    done = subprocess.run([sys.executable, "-m", "expstore", *options, *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)
    if expect is not None:
        assert done.returncode == expect, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """(root URL, CLI options, storage options) of a fresh root on local disk or on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "runs"), (), {}
    server: S3Server = request.getfixturevalue("moto_server")
    return f"s3://cli-{unique()}/runs", ("--endpoint-url", server.endpoint_url), server.storage_options


def _corrupt(url: str, key: str, storage_options: dict[str, Any]) -> None:
    """Flip the last byte of a value (the end of the last array of a checkpoint)."""
    with open_store(url, **storage_options) as store:
        data = bytearray(store.read(key))
        data[-1] ^= 0xFF
        store.write(key, bytes(data))


def test_demo_ls_verify_then_a_corrupt_checkpoint_fails_verify(where: Any, tmp_path: Path) -> None:
    root, opts, storage = where
    out = cli("demo", "--url", root, *SMALL, cwd=tmp_path, options=opts).stdout
    assert "starting exp001 from scratch" in out and "trained exp001: iterations 1-300" in out
    listing = cli("ls", root, cwd=tmp_path, options=opts).stdout
    assert "run exp001" in listing and "final" in listing
    for name in ("exp001.log", "exp001_structured.jsonl", "exp001.json", "exp001.csv", "exp001.pkl", "exp001_summary.json"):
        assert name in listing
    doc = json.loads(cli("ls", root, "--json", cwd=tmp_path, options=opts).stdout)
    assert [e["iteration"] for e in doc["runs"][0]["checkpoints"][0]["entries"]] == [100, 200, 300]
    assert "3 file(s) checked, 0 bad" in cli("verify", root, cwd=tmp_path, options=opts).stdout

    _corrupt(f"{root}/exp001/checkpoints", "exp001_iter_000200.ckpt", storage)
    failed = cli("verify", root, cwd=tmp_path, options=opts, expect=1)
    bad_lines = [line for line in failed.stdout.splitlines() if line.startswith("BAD")]
    assert len(bad_lines) == 1 and "exp001_iter_000200.ckpt" in bad_lines[0] and "crc32c" in bad_lines[0]
    report = json.loads(cli("verify", root, "--json", cwd=tmp_path, options=opts, expect=1).stdout)
    assert [b["ref"].rpartition("/")[2] for b in report["bad"]] == ["exp001_iter_000200.ckpt"]
    ref = f"{root}/exp001/checkpoints/exp001_iter_000300.ckpt"
    shown = json.loads(cli("show", ref, "--json", cwd=tmp_path, options=opts).stdout)
    assert shown["iteration"] == 300 and shown["tags"] == ["final"]
    assert {leaf["path"]: leaf["shape"] for leaf in shown["leaves"] if leaf["kind"] == "array"}["w"] == [10]


def test_crash_at_then_demo_again_resumes_with_the_same_results(tmp_path: Path) -> None:
    crashed = cli("demo", "--url", "crashed", *SMALL, "--crash-at", "250", cwd=tmp_path, expect=None)
    assert crashed.returncode in (-signal.SIGKILL, 137) and "--crash-at 250" in crashed.stderr
    listing = json.loads(cli("ls", "crashed", "--json", cwd=tmp_path).stdout)
    assert [e["iteration"] for e in listing["runs"][0]["checkpoints"][0]["entries"]] == [100, 200]
    resumed = cli("demo", "--url", "crashed", *SMALL, cwd=tmp_path).stdout
    assert "resuming exp001 from the checkpoint of iteration 200" in resumed and "iterations 201-300" in resumed
    cli("demo", "--url", "clean", *SMALL, cwd=tmp_path)
    rows = [json.loads((tmp_path / r / "exp001/results/exp001.json").read_text())["results"] for r in ("crashed", "clean")]
    assert rows[0] == rows[1] and rows[0][-1]["iteration"] == 300
    again = cli("demo", "--url", "clean", *SMALL, cwd=tmp_path).stdout
    assert "resuming exp001 from the checkpoint of iteration 300" in again and "nothing left to train" in again


def test_compare_shows_both_runs_and_plot_writes_a_png(tmp_path: Path) -> None:
    cli("demo", "--url", "runs", "--name", "exp001", *SMALL, cwd=tmp_path)
    cli("demo", "--url", "runs", "--name", "exp002", "--seed", "1", *SMALL, cwd=tmp_path)
    table = cli("compare", "runs/exp001", "runs/exp002", cwd=tmp_path).stdout
    header = table.splitlines()[0].split()
    assert header == ["exp001", "exp002"]
    seed_row = next(line for line in table.splitlines() if line.startswith("config seed"))
    assert seed_row.split()[2:] == ["0", "1"]
    assert any(line.split()[0] == "loss" for line in table.splitlines())
    doc = json.loads(cli("compare", "runs", "--json", cwd=tmp_path).stdout)
    assert [r["name"] for r in doc["runs"]] == ["exp001", "exp002"] and "seed" in doc["differing_config"]

    cli("plot", "runs", "--metric", "loss", "-o", "loss.png", cwd=tmp_path)
    png = (tmp_path / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    pixels = matplotlib.image.imread(tmp_path / "loss.png")
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::7]}) > 10  # lines, text: not blank
    missing = cli("plot", "runs", "--metric", "nope", cwd=tmp_path, expect=2)
    assert "'nope'" in missing.stderr and "loss" in missing.stderr


def test_cp_local_to_s3_to_local_gives_identical_checkpoints(moto_server: S3Server, tmp_path: Path) -> None:
    opts = ("--endpoint-url", moto_server.endpoint_url)
    cli("demo", "--url", "runs", *SMALL, cwd=tmp_path)
    bucket = f"s3://cli-{unique()}/copy"
    first = cli("cp", "runs", bucket, cwd=tmp_path, options=opts).stdout
    assert "copied 3 checkpoint(s) (0 already there)" in first and "verified 3 checkpoint(s)" in first
    again = cli("cp", "runs", bucket, cwd=tmp_path, options=opts).stdout
    assert "copied 0 checkpoint(s) (3 already there)" in again and "0 file(s)" in again
    cli("cp", bucket, "back", cwd=tmp_path, options=opts)
    source = sorted(p.relative_to(tmp_path / "runs") for p in (tmp_path / "runs").rglob("*") if p.is_file()
                    and not p.name.startswith(".expstore-"))
    copied = sorted(p.relative_to(tmp_path / "back") for p in (tmp_path / "back").rglob("*") if p.is_file()
                    and not p.name.startswith(".expstore-"))
    assert source == copied
    for rel in source:
        if rel.suffix in (".ckpt",):
            assert (tmp_path / "runs" / rel).read_bytes() == (tmp_path / "back" / rel).read_bytes(), rel
        elif rel.name.endswith("_index.json"):  # the same entries; a save's version token names the object in its own store
            original = json.loads((tmp_path / "runs" / rel).read_bytes())
            for entry in original["checkpoints"]:
                assert entry.pop("version")
            assert original == json.loads((tmp_path / "back" / rel).read_bytes()), rel
    one = cli("cp", "runs/exp001/checkpoints/exp001_iter_000200.ckpt", "single", cwd=tmp_path).stdout
    assert "copied 1 checkpoint(s)" in one
    listing = json.loads(cli("ls", "single", "--json", cwd=tmp_path).stdout)
    assert [e["iteration"] for e in listing["runs"][0]["checkpoints"][0]["entries"]] == [200]


def test_cp_between_two_s3_services(moto_server: S3Server, seaweedfs_server: S3Server, tmp_path: Path) -> None:
    """SRC on one endpoint, DST on another: `--dst-endpoint-url` sends DST's requests to its own server."""
    cli("demo", "--url", "runs", *SMALL, cwd=tmp_path)
    on_moto, on_seaweed = f"s3://cli-{unique()}/runs", f"s3://cli-{unique()}/runs"
    cli("cp", "runs", on_moto, cwd=tmp_path, options=("--endpoint-url", moto_server.endpoint_url))
    out = cli("cp", on_moto, on_seaweed, "--dst-endpoint-url", seaweedfs_server.endpoint_url, "--no-progress",
              cwd=tmp_path, options=("--endpoint-url", moto_server.endpoint_url)).stdout
    assert "copied 3 checkpoint(s)" in out and "verified 3 checkpoint(s)" in out and ": ok" in out
    verified = cli("verify", on_seaweed, cwd=tmp_path, options=("--endpoint-url", seaweedfs_server.endpoint_url)).stdout
    assert "3 file(s) checked, 0 bad" in verified
    missing = cli("ls", on_seaweed, cwd=tmp_path, options=("--endpoint-url", moto_server.endpoint_url), expect=None)
    assert missing.returncode != 0  # nothing went to the source's server


@pytest.mark.parametrize("container", ["run.h5", "run.zarr"])
def test_demo_on_hdf5_and_zarr(container: str, tmp_path: Path) -> None:
    cli("demo", "--url", container, *SMALL, cwd=tmp_path)
    assert "3 file(s) checked, 0 bad" in cli("verify", container, cwd=tmp_path).stdout
    shown = cli("show", container, cwd=tmp_path).stdout
    assert "iteration 300" in shown and "history/train_loss" in shown
    logs = json.loads(cli("logs", container, "--json", cwd=tmp_path).stdout)
    assert logs["logs"][0]["analysis"]["final_status"] == "completed"


def test_gc_removes_only_unindexed_checkpoints(tmp_path: Path) -> None:
    cli("demo", "--url", "runs", *SMALL, cwd=tmp_path)
    folder = tmp_path / "runs/exp001/checkpoints"
    orphan = folder / "exp001_iter_000050.ckpt"
    orphan.write_bytes((folder / "exp001_iter_000100.ckpt").read_bytes())
    assert "would delete" in cli("gc", "runs", "--dry-run", cwd=tmp_path).stdout and orphan.exists()
    out = cli("gc", "runs", cwd=tmp_path).stdout
    assert "exp001_iter_000050.ckpt" in out and not orphan.exists()
    assert len(list(folder.glob("*.ckpt"))) == 3
    one = cli("verify", "runs/exp001/checkpoints/exp001_iter_000100.ckpt", cwd=tmp_path).stdout
    assert "1 file(s) checked, 0 bad" in one

    (folder / "exp001_index.json").write_text("{not json")  # a broken index: verify names it, gc deletes nothing
    failed = cli("verify", "runs", cwd=tmp_path, expect=1).stdout
    assert "BAD" in failed and "exp001_index.json" in failed
    assert "nothing deleted" in cli("gc", "runs", cwd=tmp_path, expect=1).stdout
    assert len(list(folder.glob("*.ckpt"))) == 3


def test_gc_dry_run_lists_exactly_what_gc_deletes(tmp_path: Path) -> None:
    """Unindexed objects, an orphan sharded folder and a dead writer's temp file: listed, then deleted."""
    cli("demo", "--url", "runs", *SMALL, cwd=tmp_path)
    folder = tmp_path / "runs/exp001/checkpoints"
    (folder / "exp001_iter_000050.ckpt").write_bytes((folder / "exp001_iter_000100.ckpt").read_bytes())
    (folder / "exp001_iter_000060").mkdir()
    (folder / "exp001_iter_000060/shard-0-of-2.ckpt").write_bytes(b"a shard whose save never completed")
    dead = folder / ".expstore-tmp-0123456789abcdef"
    dead.write_bytes(b"half a value")  # nobody holds its lock: its writer is gone
    CheckpointManager(str(folder), "other").save_checkpoint({"w": np.ones(2)}, 1)  # a second experiment in the folder
    expected = ["exp001_iter_000050.ckpt", "exp001_iter_000060/shard-0-of-2.ckpt", dead.name]
    listed = cli("gc", "runs", "--dry-run", cwd=tmp_path).stdout
    assert sorted(line.rsplit("/checkpoints/", 1)[1] for line in listed.splitlines() if line.startswith("would delete")) == sorted(expected)
    assert "3 unindexed checkpoint object(s) to delete" in listed
    assert dead.exists() and (folder / "exp001_iter_000050.ckpt").exists()
    deleted = cli("gc", "runs", cwd=tmp_path).stdout
    assert sorted(line.rsplit("/checkpoints/", 1)[1] for line in deleted.splitlines() if line.startswith("deleted")) == sorted(expected)
    assert not dead.exists() and not (folder / "exp001_iter_000060/shard-0-of-2.ckpt").exists()


def test_logs_follow_tails_a_running_demo_until_it_ends(tmp_path: Path) -> None:
    demo = subprocess.Popen([sys.executable, "-m", "expstore", "demo", "--url", "runs", *SMALL, "--delay", "0.01"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not list((tmp_path / "runs").rglob("*_structured.jsonl")) and time.monotonic() < deadline:
            time.sleep(0.1)
        follow = cli("logs", "runs", "--follow", "--interval", "0.2", cwd=tmp_path)
    finally:
        assert demo.wait(timeout=60) == 0
    lines = follow.stdout.splitlines()
    assert lines[0].startswith("following exp001") and lines[-1] == "run ended: completed"
    assert any(" metrics " in line and "step=300" in line for line in lines)


@pytest.mark.parametrize(
    ("args", "needle", "parsed"),
    [
        (["ls", "nowhere"], "'nowhere'", True),
        (["ls", "foo://bucket/x"], "'foo://bucket/x'", True),
        (["verify", "file://host/x"], "'file://host/x'", True),
        (["show", "runs/exp001/checkpoints/exp001_iter_000999.ckpt"], "exp001_iter_000999.ckpt", True),
        (["demo", "--iterations", "0"], "--iterations", True),
        (["ls", "--bogus", "runs"], "--bogus", False),
        (["frob"], "'frob'", False),
    ],
)
def test_bad_urls_and_flags_exit_2_with_one_line(args: list[str], needle: str, parsed: bool, tmp_path: Path) -> None:
    done = cli(*args, cwd=tmp_path, expect=2)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and needle in lines[0] and "error" in lines[0], done.stderr
    if parsed:  # errors past the command line show their traceback with --debug
        assert "Traceback" in cli("--debug", *args, cwd=tmp_path, expect=2).stderr


def test_the_console_script_runs_the_same_command(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "expstore"
    if not script.exists():
        pytest.skip("the `expstore` console script is not installed (pip install -e .)")
    done = subprocess.run([str(script), "ls", "nowhere"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("expstore ls: error:")


def test_follow_prints_each_new_event_of_every_rank_once():
    """Ranks merged by time put new events anywhere in the list: follow tracks each rank's count."""
    from expstore.cli.logs import events_per_rank, new_events

    a = [{"rank": 0, "timestamp": f"t{t}", "event_type": f"a{i}"} for i, t in enumerate((1, 4, 6))]
    b = [{"rank": 1, "timestamp": f"t{t}", "event_type": f"b{i}"} for i, t in enumerate((2, 3))]
    first_poll = [a[0], b[0], a[1]]
    second_poll = [a[0], b[0], b[1], a[1], a[2]]  # b1 (t3) lands before a1 (t4), which was printed
    new = new_events(second_poll, events_per_rank(first_poll))
    assert [e["event_type"] for e in new] == ["b1", "a2"]


@pytest.mark.parametrize("container", ["ckpt", "run.h5/ckpt"])
def test_show_and_verify_describe_torch_checkpoints(container: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    state = {"model": {"w": torch.ones(4, 3, dtype=torch.bfloat16), "c": torch.zeros(5, dtype=torch.complex64)},
             "opt": {"state": {0: {"step": torch.tensor(1.0)}}}}
    with CheckpointManager(tmp_path / container, "e") as manager:
        ref = manager.save_checkpoint(state, 1)
        manager.save_checkpoint(torch.arange(3), 2)  # a state that is one tensor
    shown = cli("show", "--json", ref, cwd=tmp_path)
    doc = json.loads(shown.stdout)
    leaves = {leaf["path"]: leaf for leaf in (doc[0] if isinstance(doc, list) else doc)["leaves"]}
    assert leaves["model/w"]["kind"] == "tensor" and leaves["model/w"]["shape"] == [4, 3]
    assert leaves["model/c"]["shape"] == [5] and "opt/state/0/step" in leaves
    assert leaves["model/w"]["dtype"] in ("BF16", "bfloat16")
    assert "0 bad" in cli("verify", container, cwd=tmp_path).stdout
