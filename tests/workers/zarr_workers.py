"""Subprocess workers for tests/backends/test_zarr.py (run as `python -m tests.workers.zarr_workers <mode> ...`).

Zarr runs an event loop in a thread, so tests start these with `subprocess`, never `fork`.
"""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

ARRAYS = 4
ELEMENTS = 2**20  # float32: 4 MiB per array, 16 MiB per tree


def expected_tree(generation: int) -> dict:
    """The tree of one generation: its arrays derive from the generation number, so a reader can check them."""
    base = np.arange(ELEMENTS, dtype=np.int64) * 7 + generation * 13
    return {
        "generation": generation,
        "arrays": [((base + i) % 65521).astype(np.float32) for i in range(ARRAYS)],
    }


def tree_problem(tree: object) -> str | None:
    """None if `tree` is exactly the tree of the generation it names, else what is wrong."""
    if not isinstance(tree, dict) or not isinstance(tree.get("generation"), int):
        return f"not a generation tree: {type(tree).__name__}"
    want = expected_tree(tree["generation"])
    got = tree.get("arrays")
    if not isinstance(got, list) or len(got) != ARRAYS:
        return "wrong number of arrays"
    for i, (a, b) in enumerate(zip(want["arrays"], got)):
        if a.dtype != b.dtype or a.shape != b.shape or not np.array_equal(a, b):
            return f"array {i} of generation {tree['generation']} differs"
    return None


def write_trees(url: str, keys: int, start: int) -> None:
    """Write generation after generation to keys trees/t<g % keys>; print each commit once write_tree returns."""
    from expstore import open_store

    store = open_store(url)
    print("ready", flush=True)
    generation = start
    while True:
        key = f"trees/t{generation % keys}"
        store.write_tree(key, expected_tree(generation))
        print(f"committed {key} {generation}", flush=True)
        generation += 1


def die_before_switch(url: str, key: str) -> None:
    """Write a tree at `key` and SIGKILL ourselves after its child is complete, before the pointer switch."""
    from expstore import open_store
    from expstore.backends.zarr.local import LocalZarrStore

    def killed(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    LocalZarrStore._switch = killed  # type: ignore[method-assign]
    open_store(url).write_tree(key, expected_tree(999))


def read_checkpoints(url: str, experiment: str) -> None:
    """Load the latest checkpoint of `experiment` again and again until stdin closes; then print
    `reads <n>` and one `error <repr>` line per failed or fallen-back load (a load whose state does
    not match its iteration counts as one)."""
    import threading
    import warnings

    from expstore import KeyNotFound
    from expstore.checkpointing import CheckpointManager

    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    reads, errors = 0, []
    with CheckpointManager(url, experiment, keep_last_n=None) as manager:
        print("ready", flush=True)
        while not done.is_set():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # a fallback means a checkpoint read as corrupt
                    loaded = manager.load_checkpoint()
            except KeyNotFound:
                continue  # nothing saved yet
            except Exception as exc:  # noqa: BLE001 - every failure is reported to the test
                errors.append(repr(exc))
                continue
            reads += 1
            if int(loaded["state"]["w"][0]) != loaded["iteration"]:
                errors.append(f"iteration {loaded['iteration']} holds the state of {int(loaded['state']['w'][0])}")
    print(f"reads {reads}", flush=True)
    for error in errors:
        print(f"error {error}", flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "read_checkpoints":
        read_checkpoints(args[0], args[1])
    elif mode == "write_trees":
        write_trees(args[0], int(args[1]), int(args[2]))
    elif mode == "die_before_switch":
        die_before_switch(args[0], args[1])
    else:
        raise SystemExit(f"unknown mode {mode!r}")
