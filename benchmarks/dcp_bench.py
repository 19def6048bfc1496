"""torch.distributed.checkpoint saves through expstore's StoreWriter against DCP's own FileSystemWriter.

What it measures, for a state of `--size-mib` MiB of random float32 in 16 DTensors sharded by rows
(Shard(0)) over the ranks of a gloo group on CPU (each rank holds 1/world of every tensor):

- local: `dcp.save(state, storage_writer=StoreWriter(folder))` (one object per rank, written with
  fsync by the local store, then the metadata committed with if_absent) against
  `dcp.save(state, storage_writer=FileSystemWriter(folder))` (sync_files=True, its default: torch.save
  of every tensor into one file per rank, fsync, then a pickled .metadata), with 1 and 4 ranks;
- S3 (SeaweedFS started here on 127.0.0.1): `dcp.save` with StoreWriter on `s3://bucket/...` for 1, 2
  and 4 ranks, reported as aggregate MiB/s of the whole state (no baseline: DCP has no S3 writer of
  its own besides the fsspec one).

Each save goes to a new folder / prefix; the previous round's output is removed untimed, followed by
an `os.sync()` and a barrier, so no round pays for another's writeback. Rank 0 times a save from a
barrier to `dcp.save` returning (DCP's last collective), pairs run interleaved after one untimed
warm-up round, and the table gives medians (best in parentheses).

Run from the repository root:

    python benchmarks/dcp_bench.py            # 256 MiB, 5 repeats, 1 and 4 ranks local, 1/2/4 on SeaweedFS
    python benchmarks/dcp_bench.py --quick    # 32 MiB, 2 repeats: a smoke run
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from benchlib import MiB, Row, bench_parser, machine, parse_bench_args, print_report, run, scratch_folder, time_pair

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

N_TENSORS = 16
COLUMNS = 1024  # float32 columns per row: 4 KiB rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_state(size_mib: int, world: int, rank: int, mesh: Any) -> dict[str, Any]:
    """This rank's shards of `N_TENSORS` row-sharded DTensors of `size_mib` MiB in all."""
    import torch
    from torch.distributed.tensor import DTensor, Shard

    rows = max(world, size_mib * MiB // (N_TENSORS * COLUMNS * 4) // world * world)
    generator = torch.Generator().manual_seed(rank)
    return {f"layer{i}.weight": DTensor.from_local(torch.randn(rows // world, COLUMNS, generator=generator), mesh, [Shard(0)],
                                                   shape=torch.Size([rows, COLUMNS]), stride=(COLUMNS, 1))
            for i in range(N_TENSORS)}


def bench_rank(rank: int, world: int, port: int, task: dict[str, Any]) -> None:
    """One rank of one configuration: time the saves `task` names; rank 0 writes the times to `task["out"]`."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh

    from expstore.integrations.dcp import StoreWriter, delete_dcp_checkpoint

    warnings.filterwarnings("ignore")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    state = rank_state(task["size_mib"], world, rank, mesh)
    made: list[tuple[str, str]] = []  # (kind, location) of every save, removed before the next one
    counter = iter(range(10**6))

    def cleanup() -> None:
        if rank == 0:
            for kind, where in made:
                if kind == "s3":
                    delete_dcp_checkpoint(where, **task["options"])
                else:
                    shutil.rmtree(where, ignore_errors=True)
            made.clear()
            os.sync()
        dist.barrier()

    def save_with(kind: str) -> Any:
        def save() -> None:
            n = next(counter)
            if kind == "fs":
                from torch.distributed.checkpoint import FileSystemWriter

                where = f"{task['base']}/fs-{n}"
                writer: Any = FileSystemWriter(where, sync_files=True)
            else:
                where = f"{task['base']}/{kind}-{n}"
                writer = StoreWriter(where, **task["options"])
            dcp.save(state, storage_writer=writer)
            made.append((kind, where))
        return save

    try:
        if task["baseline"]:
            ours, theirs = time_pair(save_with(task["kind"]), save_with("fs"), task["repeat"], before_each=cleanup)
        else:
            ours, _ = time_pair(save_with(task["kind"]), lambda: None, task["repeat"], before_each=cleanup)
            theirs = []
        cleanup()
        if rank == 0:
            size = sum(t.to_local().nbytes for t in state.values()) * world
            Path(task["out"]).write_text(json.dumps({"ours": ours, "theirs": theirs, "size": size}))
    finally:
        dist.destroy_process_group()


def measure(world: int, task: dict[str, Any]) -> dict[str, Any]:
    """Spawn `world` ranks for `task`; return rank 0's times."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        task = {**task, "out": f"{tmp}/times.json"}
        mp.spawn(bench_rank, args=(world, free_port(), task), nprocs=world, join=True)
        return json.loads(Path(task["out"]).read_text())


def local_rows(folder: Path, size_mib: int, repeat: int, worlds: list[int]) -> list[Row]:
    rows = []
    for world in worlds:
        task = {"kind": "local", "base": str(folder), "options": {}, "size_mib": size_mib, "repeat": repeat, "baseline": True}
        times = measure(world, task)
        rows.append(Row(f"dcp.save, {world} rank(s), StoreWriter local", "FileSystemWriter", 1.0, times["size"],
                        times["ours"], times["theirs"]))
    return rows


def s3_lines(size_mib: int, repeat: int, worlds: list[int]) -> list[str]:
    """Aggregate MiB/s of StoreWriter on SeaweedFS per world size, as table lines."""
    from tests import s3servers

    server = s3servers.start_seaweedfs()
    lines = ["ranks | StoreWriter on SeaweedFS: aggregate MiB/s, median (best) | save s, median",
             "------+-----------------------------------------------------+---------------"]
    try:
        for world in worlds:
            base = f"s3://expstore-test/dcp-bench-{time.time_ns()}"
            task = {"kind": "s3", "base": base, "options": server.storage_options, "size_mib": size_mib,
                    "repeat": repeat, "baseline": False}
            times = measure(world, task)
            median, best = statistics.median(times["ours"]), min(times["ours"])
            rate = f"{times['size'] / MiB / median:.0f} ({times['size'] / MiB / best:.0f})"
            lines.append(f"{world:<5} | {rate:<51} | {median:.2f}")
    finally:
        server.stop()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__.split("\n\n")[0], size_help="state size in MiB over all ranks (default 256)")
    parser.add_argument("--quick", action="store_true", help="32 MiB, 2 repeats (overrides --size-mib / --repeat)")
    parser.add_argument("--s3", choices=["seaweedfs", "none"], default="seaweedfs", help="measure on SeaweedFS (default)")
    args = parse_bench_args(parser, argv)
    if args.quick:
        args.size_mib, args.repeat = 32, 2
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    with scratch_folder(args.dir, "dcp-bench-") as scratch:
        rows = local_rows(scratch, args.size_mib, args.repeat, [1, 4])
    s3 = s3_lines(args.size_mib, args.repeat, [1, 2, 4]) if args.s3 == "seaweedfs" else []
    notes = [
        f"state: {rows[0].size_bytes / MiB:.0f} MiB of float32 in {N_TENSORS} DTensors sharded by rows over the ranks;"
        f" median of {args.repeat} repeats, best in parentheses; ratio = StoreWriter time / FileSystemWriter time",
        "both sides fsync every file they write; every save goes to a new folder, the last one removed untimed + os.sync()",
        f"machine load before the run: {load_before:.1f} (1 min average)",
    ]
    command = f"{shlex.join(sys.orig_argv)} ({time.perf_counter() - started:.0f} s)"
    print_report(rows, notes, machine(["torch", "s3fs"]), command, args.json, size_mib=args.size_mib, repeat=args.repeat,
                 s3=s3)
    if s3:
        print()
        print("\n".join(s3))
    return 0


if __name__ == "__main__":
    run(main, "interrupted: local files removed, S3 server stopped")
