"""A checkpoint writer killed with SIGKILL at ≥ 50 random instants (local, HDF5, Zarr) loses 0
committed checkpoints.

A child (tests/workers/checkpoint_crash_worker.py) saves ~6 MiB checkpoints in a loop with
``keep_last_n=3`` and a tag every 10th iteration, printing ``committed <iteration>`` after each
`save_checkpoint` returns. The test kills it at a random instant, then opens a fresh manager on
the same store and checks that the index is exactly what retention keeps of the committed
checkpoints (plus the one in flight, if its index update landed), that each of them loads with
exact contents, that `load_checkpoint()` returns the newest without a warning and that `verify()`
finds nothing bad. A new child then continues on the same store; 50 kills per backend.
"""

from __future__ import annotations

import functools
import json
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from expstore.checkpointing import CheckpointManager

from ..workers import REPO_ROOT
from ..workers.checkpoint_crash_worker import EXPERIMENT, KEEP_LAST_N, metadata_for, state_for, tag_for

KILLS = 50


def spawn(url: str) -> subprocess.Popen:
    """Start a writer; it imports, then waits for `go` (so its start-up overlaps our checks)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.workers.checkpoint_crash_worker", url],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def retained(iterations: set[int]) -> set[int]:
    """What retention keeps of these iterations: the `keep_last_n` highest and every tagged one."""
    ordered = sorted(iterations)
    return set(ordered[-KEEP_LAST_N:]) | {i for i in ordered if tag_for(i)}


@functools.lru_cache(maxsize=16)
def expected_state(iteration: int) -> dict:
    return state_for(iteration)


def _same_tree(got: object, want: object, path: str) -> str | None:
    """None if `got` equals `want` exactly (dtypes, shapes, values), else where it differs."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return f"{path}: keys {sorted(got) if isinstance(got, dict) else type(got).__name__} != {sorted(want)}"
        for k in want:
            problem = _same_tree(got[k], want[k], f"{path}/{k}")
            if problem:
                return problem
        return None
    got_a, want_a = np.asarray(got), np.asarray(want)
    if got_a.dtype != want_a.dtype or got_a.shape != want_a.shape or not np.array_equal(got_a, want_a):
        return f"{path}: {got_a.dtype}{got_a.shape} differs from {want_a.dtype}{want_a.shape}"
    return None


def check_store(
    url: str, committed: set[int], in_flight: int | None, known_bad: set[int]
) -> tuple[set[int], set[int], list[str], list[str]]:
    """Check the store after a kill, with no writer running.

    `committed`: what the index named after the previous kill plus what the child reported
    committed since; `in_flight`: the iteration it was saving when killed, if any; `known_bad`:
    iterations found broken after an earlier kill (reported then, not again). Returns (iterations
    the index names now, those of them that did not load intact, lost committed checkpoints,
    other problems).
    """
    lost: list[str] = []
    problems: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. load_checkpoint() skipping an unreadable checkpoint
        with CheckpointManager(url, EXPERIMENT, keep_last_n=KEEP_LAST_N, save_frequency=1) as manager:
            if manager.store.exists(manager.index_key):
                doc = json.loads(manager.store.read(manager.index_key))  # the index parses as JSON ...
                assert doc["experiment"] == EXPERIMENT, doc
                listed = manager.list_checkpoints()  # ... and as an index
            else:
                listed = []
            named = {e["iteration"] for e in listed}
            # The save in flight may have replaced the index before the kill: then it is committed too,
            # and retention may have dropped the oldest of the last `keep_last_n` for it.
            landed = committed | ({in_flight} if in_flight in named else set())
            expected = retained(landed)
            must_keep = (committed & expected) - known_bad
            lost += [f"iteration {it}: committed, retained, but not in the index" for it in sorted(must_keep - named)]
            if named - expected:
                problems.append(f"the index names {sorted(named)}, expected {sorted(expected)}")
            failed: set[int] = set()  # the named checkpoints that did not load intact
            for entry in listed:
                it = entry["iteration"]
                try:
                    loaded = manager.load_checkpoint(entry)
                    assert loaded["iteration"] == it, f"loaded iteration {loaded['iteration']}"
                    assert loaded["metadata"] == metadata_for(it), f"metadata {loaded['metadata']}"
                    assert entry["tags"] == ([tag_for(it)] if tag_for(it) else []), f"tags {entry['tags']}"
                    problem = _same_tree(loaded["state"], expected_state(it), "state")
                    assert problem is None, problem
                except Exception as exc:  # noqa: BLE001 - any failure here is a lost or broken checkpoint
                    failed.add(it)
                    if it not in known_bad:
                        (lost if it in must_keep else problems).append(f"iteration {it}: {type(exc).__name__}: {exc}")
            if named and max(named) not in failed | known_bad:
                try:
                    newest = manager.load_checkpoint()  # warnings are errors here
                    if newest["iteration"] != max(named):
                        problems.append(f"load_checkpoint() gave iteration {newest['iteration']}, not {max(named)}")
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"load_checkpoint(): {type(exc).__name__}: {exc}")
            bad = set(manager.verify()) - {manager.ref_for(manager.key_for(it)) for it in failed}  # reported above
            if bad:
                problems.append(f"verify() found {sorted(bad)}")
    return named, failed, lost, problems


def run_until_kill(child: subprocess.Popen, rng: random.Random, opening: bool, cycles: list[float]) -> list[str]:
    """Let the child start, pick a random instant, SIGKILL it there; return the lines it printed.

    The instant: while it opens the store (`opening`), or after it reported 0–3 commits plus a
    random part of one more save cycle (scaled by the cycles seen so far, so the instants cover
    whole cycles whatever the machine's speed). No timing is asserted.
    """
    child.stdin.write("go\n")
    child.stdin.flush()
    lines = []
    if opening:
        time.sleep(rng.uniform(0.0, 0.15))
    else:
        wait_for = rng.choice([0, 1, 2, 3])
        last = None
        while wait_for:
            lines.append(child.stdout.readline())
            if not lines[-1]:
                raise AssertionError(f"the writer exited with status {child.wait()} before it was killed: {lines}")
            if lines[-1].startswith(("ready", "committed")):
                now = time.monotonic()
                if last is not None:
                    cycles.append(now - last)  # one whole save cycle: make the state, write, index, delete
                last = now
                wait_for -= lines[-1].startswith("committed")
        recent = sorted(cycles[-9:])
        typical = recent[len(recent) // 2] if recent else 0.2
        time.sleep(rng.uniform(0.0, 1.2 * typical))
    child.send_signal(signal.SIGKILL)
    child.wait()
    lines += child.stdout.readlines()
    child.stdout.close()
    child.stdin.close()
    return lines


@pytest.mark.parametrize("where", ["local", "hdf5", "zarr"])
def test_sigkilled_checkpoint_writer_loses_no_committed_checkpoint(tmp_path, where):
    url = str({"local": tmp_path / "ckpt", "hdf5": tmp_path / "run.h5" / "ckpt", "zarr": tmp_path / "run.zarr" / "ckpt"}[where])
    rng = random.Random(f"checkpoint-crash-{where}")
    committed: set[int] = set()  # what the index named after the last kill, plus what the child committed since
    kills = commits = in_flight_landed = collected = 0
    cycles: list[float] = []
    lost: list[str] = []  # committed checkpoints retention keeps that were missing, unreadable or wrong
    known_bad: set[int] = set()  # checkpoints found broken (reported once; only when something is wrong)
    problems: list[str] = []  # anything else amiss (a broken entry for the save in flight, verify(), ...)
    started = time.monotonic()
    child = spawn(url)
    try:
        for round_ in range(KILLS):
            lines = run_until_kill(child, rng, opening=round_ % 10 == 9, cycles=cycles)
            kills += 1
            child = spawn(url)  # the next writer imports while we check
            in_flight = None
            for line in lines:
                if not line.endswith("\n"):
                    continue  # cut off by the kill
                word, *rest = line.split()
                if word == "saving":
                    in_flight = int(rest[0])
                elif word == "committed":
                    assert int(rest[0]) == in_flight, lines
                    committed.add(in_flight)
                    commits += 1
                    in_flight = None
            named, failed, round_lost, round_problems = check_store(url, committed, in_flight, known_bad)
            known_bad |= failed
            lost += [f"round {round_}: {message}" for message in round_lost]
            problems += [f"round {round_}: {message}" for message in round_problems]
            in_flight_landed += in_flight in named
            committed = named  # the index is the truth the next child continues from
            if round_ % 2:  # half the time, remove what crashes left; otherwise the next child overwrites it
                with CheckpointManager(url, EXPERIMENT, keep_last_n=KEEP_LAST_N) as manager:
                    collected += len(manager.gc())
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        child.stdin.close()
    if where == "local":  # gc also removes the temp files of writers killed mid-write ...
        with CheckpointManager(url, EXPERIMENT, keep_last_n=KEEP_LAST_N) as manager:
            manager.gc()
        # ... all but an empty one younger than 5 s: a writer might be about to lock it
        assert [p.name for p in Path(url).rglob(".expstore-tmp-*") if p.stat().st_size] == []
    elapsed = time.monotonic() - started
    print(
        f"\n{where}: {kills} kills, {commits} commits reported, {in_flight_landed} kills after the index update, "
        f"{collected} orphans collected, {len(lost)} lost, {len(problems)} other problems, {elapsed:.1f} s, "
        f"last iteration {max(committed, default=0)}"
    )
    assert kills >= 50
    assert commits > 50  # the kills really landed among saves
    assert lost == [], lost
    assert problems == [], problems
