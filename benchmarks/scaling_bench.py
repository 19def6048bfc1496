"""Many writers and sharded saves (issue 9): aggregate save throughput for 1..8 ranks, and lost index updates.

What it measures, on local disk (a scratch folder) and on SeaweedFS started here on 127.0.0.1:

- single writer: one process, a plain `CheckpointManager.save_checkpoint` of the whole state
  (`--size-mib` MiB of random float32, one `ShardedArray` leaf is not needed there);
- n ranks (1, 2, 4, 8): n processes, each holding `size / n` MiB as a `ShardedArray`, wait on a
  barrier, then each saves its shard; the last shard to land commits the manifest and the index.
  Time = first start to last return (CLOCK_MONOTONIC is one clock for every process); aggregate
  throughput = total MiB / that time. State generation, process start-up and an `os.sync()`
  before each round are not timed;
- lost updates: `--writers` processes race `--races` saves of tiny checkpoints (distinct
  iterations) into one history; lost = saves the final index does not name (target 0).

Run from the repository root: ``python benchmarks/scaling_bench.py [--size-mib 256] [--repeat 3]
[--s3 seaweedfs|none] [--races 1000]``. Times are medians of the repeats.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import MiB, machine, run, scratch_folder

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from expstore.checkpointing import CheckpointManager  # noqa: E402
from expstore.checkpointing.sharded import ShardedArray  # noqa: E402

SPAWN = multiprocessing.get_context("spawn")


def rank_main(url: str, options: dict[str, Any], rank: int, n: int, size: int, repeat: int, barrier: Any, out: Any) -> None:
    """One rank (n=0: the single writer): build its state, then save it `repeat` times in step with the others."""
    cols = 1024
    rows = size // 4 // cols
    local = np.random.default_rng(rank).random((rows // max(n, 1), cols), dtype=np.float32)
    if n:
        state = {"w": ShardedArray(local, (local.shape[0] * n, cols), local.shape[0] * rank)}
        manager = CheckpointManager(url, "bench", keep_last_n=1, rank=rank, world_size=n, **options)
    else:
        state, manager = {"w": local}, CheckpointManager(url, "bench", keep_last_n=1, **options)
    with manager:
        for it in range(1, repeat + 2):  # the first round warms up the connection and the files
            if rank == 0:
                os.sync()  # no round pays for the writeback another left behind
            barrier.wait()
            start = time.monotonic()
            manager.save_checkpoint(state, it)
            out.put((it, start, time.monotonic()))


def save_round(url: str, options: dict[str, Any], n: int, size: int, repeat: int) -> list[float]:
    """Seconds per save of the whole state by n ranks (n=0: one plain writer), one per repeat."""
    procs = max(n, 1)
    barrier, out = SPAWN.Barrier(procs), SPAWN.Queue()
    workers = [SPAWN.Process(target=rank_main, args=(url, options, r, n, size, repeat, barrier, out)) for r in range(procs)]
    for w in workers:
        w.start()
    spans: dict[int, list[float]] = {}
    for _ in range(procs * (repeat + 1)):
        it, start, end = out.get(timeout=600)
        lo, hi = spans.get(it, [start, end])
        spans[it] = [min(lo, start), max(hi, end)]
    for w in workers:
        w.join()
        if w.exitcode:
            raise RuntimeError(f"a rank exited with {w.exitcode}")
    return [hi - lo for it, (lo, hi) in sorted(spans.items()) if it > 1]


def race_main(url: str, options: dict[str, Any], iterations: list[int]) -> None:
    with CheckpointManager(url, "race", keep_last_n=None, **options) as m:
        for it in iterations:
            m.save_checkpoint({"w": np.full(4, it)}, it)


def lost_updates(url: str, options: dict[str, Any], writers: int, races: int) -> tuple[int, float]:
    """(saves the final index does not name, seconds) for `writers` processes racing `races` saves."""
    iterations = list(range(1, races + 1))
    workers = [SPAWN.Process(target=race_main, args=(url, options, iterations[w::writers])) for w in range(writers)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.monotonic() - start
    with CheckpointManager(url, "race", keep_last_n=None, **options) as m:
        return races - len(m.list_checkpoints()), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ranks", default="1,2,4,8")
    parser.add_argument("--s3", choices=["seaweedfs", "none"], default="seaweedfs")
    parser.add_argument("--races", type=int, default=1000)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the local scratch folder")
    args = parser.parse_args()
    size = args.size_mib * MiB
    server = None
    if args.s3 == "seaweedfs":
        from tests import s3servers

        server = s3servers.start_seaweedfs()
    print(machine(["numpy", "google-crc32c", "s3fs"]))
    print(f"state {args.size_mib} MiB float32 in total; median of {args.repeat} saves; keep_last_n=1\n")
    print("| backend | writers | seconds | aggregate MiB/s | vs single writer |")
    print("|---|---|---:|---:|---:|")
    try:
        with scratch_folder(args.dir, "scaling-bench-") as scratch:
            backends = [("local", lambda: (str(scratch / uuid.uuid4().hex), {}))]
            if server is not None:
                backends.append(("seaweedfs", lambda: (f"s3://bench/{uuid.uuid4().hex}", server.storage_options)))
            races = []
            for name, where in backends:
                single = statistics.median(save_round(*where(), 0, size, args.repeat))
                print(f"| {name} | single writer | {single:.2f} | {args.size_mib / single:.0f} | 1.00 |", flush=True)
                for n in [int(x) for x in args.ranks.split(",")]:
                    t = statistics.median(save_round(*where(), n, size, args.repeat))
                    print(f"| {name} | {n} ranks | {t:.2f} | {args.size_mib / t:.0f} | {single / t:.2f} |", flush=True)
                races.append((name, *lost_updates(*where(), args.writers, args.races)))
            print()
            for name, lost, seconds in races:
                print(f"{name}: {args.writers} writers racing {args.races} index updates: {lost} lost ({seconds:.1f} s)")
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    run(main, "scaling benchmark interrupted")
