"""Code that tests run in separate processes (importable under the spawn start method)."""

from __future__ import annotations

import json
import sys
from typing import Any

from expstore import PreconditionFailed, open_store

MiB = 2**20


def increment(url: str, options: dict[str, Any], times: int) -> int:
    """Add 1 to the counter at key `counter` `times` times with compare-and-swap; return the conflicts seen."""
    store = open_store(url, **options)
    done = conflicts = 0
    while done < times:
        token = store.version("counter")  # version before value: a write in between makes the CAS fail
        value = int(store.read("counter"))
        try:
            store.write("counter", str(value + 1).encode(), if_match=token)
        except PreconditionFailed:
            conflicts += 1
        else:
            done += 1
    return conflicts


def rewrite_forever(url: str, options: dict[str, Any], size: int) -> None:
    """Rewrite `value` with ever new generations of one repeated byte until killed."""
    store = open_store(url, **options)
    generation = int(store.read_range("value", 0, 1)[0])
    print("writing", flush=True)
    while True:
        generation = (generation + 1) % 256
        store.write("value", bytes([generation]) * size)


if __name__ == "__main__":
    rewrite_forever(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]))
