"""Subprocesses for tests/backends/test_hdf5.py and tests/backends/test_hdf5_sharing.py: `python -m tests.workers.hdf5_workers <command> <args...>`.

writer PATH FIRST_GENERATION SEED
    loops forever writing ~16 MiB trees (4 float32 arrays derived from a generation number),
    printing `committed <key> <generation>` after each write_tree returns and `deleted <key>`
    after each delete; prints `ready` once the store is open. The test kills it.
hold PATH
    opens a checkpoint manager on the file (experiment `held`), saves iteration 1, prints `holding`;
    then for each line `save N` on stdin saves iteration N and prints `saved N`, and on an empty
    line reads the value `from-test` (`read <value>`), closes and prints `closed`.
saver PATH COUNT
    saves iterations 1..COUNT of experiment `live` (`live_state(i)`), printing `saved <i>` after each.
h5py-lock PATH
    opens the file with plain h5py in mode "a" (HDF5 takes its exclusive lock), prints `locked`,
    waits for a line on stdin, closes and prints `unlocked`.
die-after-journal PATH KEY
    writes a tree at KEY but exits right after its journal is in place, before applying it.
die-in-rewrite PATH
    writes `tree_for("big", 0)` and `tree_for("big", 1)` at key `big`, then rewrites it with
    generation 2 and exits as die-after-journal does.
"""

from __future__ import annotations

import random
import sys

import numpy as np

from expstore import open_store

KEYS = [f"trees/t{i}" for i in range(5)]
ARRAY_LEN = 2**20  # float32: 4 MiB per array, 16 MiB per tree


def tree_for(key: str, generation: int) -> dict:
    """The tree the writer stores for (key, generation); the test recomputes it to check contents."""
    base = np.arange(ARRAY_LEN, dtype=np.float32)
    return {
        "generation": generation,
        "key": key,
        "arrays": {f"a{j}": base * np.float32(j + 1) + np.float32(generation % 100_000) for j in range(4)},
    }


def writer(path: str, first_generation: int, seed: int) -> None:
    rng = random.Random(seed)
    store = open_store(path)
    print("ready", flush=True)
    generation = first_generation
    while True:
        key = rng.choice(KEYS)
        if rng.random() < 0.1 and store.exists(key):
            print(f"deleting {key}", flush=True)
            store.delete(key)
            print(f"deleted {key}", flush=True)
            continue
        print(f"writing {key} {generation}", flush=True)
        store.write_tree(key, tree_for(key, generation))
        print(f"committed {key} {generation}", flush=True)
        if rng.random() < 0.2:
            store.write(f"bytes/{key}", generation.to_bytes(8, "little") * 1000)
        generation += 1


def live_state(iteration: int) -> dict:
    """The state `saver` saves at `iteration`: the test recomputes it to check a loaded checkpoint."""
    return {"w": np.full((300, 100), float(iteration)), "b": np.arange(10) * iteration, "iteration": iteration}


def hold(path: str) -> None:
    from expstore.checkpointing import CheckpointManager

    with CheckpointManager(path, "held", keep_last_n=None) as manager:
        manager.save_checkpoint(live_state(1), 1)
        print("holding", flush=True)
        for line in sys.stdin:
            if not line.strip():
                break
            iteration = int(line.split()[1])
            manager.save_checkpoint(live_state(iteration), iteration)
            print(f"saved {iteration}", flush=True)
        print(f"read {manager.store.read('from-test').decode()}", flush=True)
    print("closed", flush=True)


def saver(path: str, count: int) -> None:
    from expstore.checkpointing import CheckpointManager

    with CheckpointManager(path, "live", keep_last_n=5) as manager:
        for iteration in range(1, count + 1):
            manager.save_checkpoint(live_state(iteration), iteration)
            print(f"saved {iteration}", flush=True)


def h5py_lock(path: str) -> None:
    import h5py

    with h5py.File(path, "a"):
        print("locked", flush=True)
        sys.stdin.readline()
    print("unlocked", flush=True)


def crash_after_journal() -> None:
    """Make the next commit exit the process once its journal is durable, before it is applied."""
    import os

    from expstore.backends.hdf5 import journal

    journal._apply = lambda *args: os._exit(3)


def die_after_journal(path: str, key: str) -> None:
    store = open_store(path)
    crash_after_journal()
    store.write_tree(key, {"x": np.arange(10.0), "note": "from the journal"})


def die_in_rewrite(path: str) -> None:
    store = open_store(path)
    store.write_tree("big", tree_for("big", 0))
    store.write_tree("big", tree_for("big", 1))
    crash_after_journal()
    store.write_tree("big", tree_for("big", 2))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "writer":
        writer(args[0], int(args[1]), int(args[2]))
    elif command == "hold":
        hold(args[0])
    elif command == "saver":
        saver(args[0], int(args[1]))
    elif command == "h5py-lock":
        h5py_lock(args[0])
    elif command == "die-after-journal":
        die_after_journal(args[0], args[1])
    elif command == "die-in-rewrite":
        die_in_rewrite(args[0])
    else:
        raise SystemExit(f"unknown command {command!r}")
