"""Subprocesses for tests/test_hdf5.py: `python -m tests.hdf5_workers <command> <args...>`.

writer PATH FIRST_GENERATION SEED
    loops forever writing ~16 MiB trees (4 float32 arrays derived from a generation number),
    printing `committed <key> <generation>` after each write_tree returns and `deleted <key>`
    after each delete; prints `ready` once the store is open. The test kills it.
hold PATH
    opens the store, writes a value, prints `holding` and waits for a line on stdin before closing.
try-open PATH
    tries to read from the store; prints `ok` or `error <type> <message>`.
die-after-journal PATH KEY
    writes a tree at KEY but exits right after its journal is in place, before applying it.
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


def hold(path: str) -> None:
    store = open_store(path)
    store.write("held", b"by another process")
    print("holding", flush=True)
    sys.stdin.readline()
    store.close()
    print("closed", flush=True)


def die_after_journal(path: str, key: str) -> None:
    import os

    from expstore.backends import journal

    store = open_store(path)
    journal._apply = lambda *args: os._exit(3)  # the crash point: journal durable, file not yet updated
    store.write_tree(key, {"x": np.arange(10.0), "note": "from the journal"})


def try_open(path: str) -> None:
    try:
        store = open_store(path)
        store.list()
        print("ok", flush=True)
        store.close()
    except Exception as exc:  # reported to the test, which checks type and message
        print(f"error {type(exc).__name__} {exc}", flush=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "writer":
        writer(args[0], int(args[1]), int(args[2]))
    elif command == "hold":
        hold(args[0])
    elif command == "die-after-journal":
        die_after_journal(args[0], args[1])
    elif command == "try-open":
        try_open(args[0])
    else:
        raise SystemExit(f"unknown command {command!r}")
