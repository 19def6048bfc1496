"""Checkpoint save and load of `CheckpointManager` against the raw writes and the usual formats, from one run.

What it measures, for one state of `--size-mib` MiB of random float32 in 10 arrays
(`{"model": {"w0".."w4"}, "optimizer": {"m0".."m4"}}`), generated once:

- local save: `manager.save_checkpoint(state, i)` (encode + crc32c + temp file + fsync + rename,
  then the index commit, keep_last_n=1; the retention delete of the previous checkpoint runs after
  the call returns and is waited for untimed) against
  open + write + flush + fsync of the same array bytes concatenated (the file truncated and
  rewritten each round), and against `pickle.dump(state, f, protocol=5)` + fsync (the seed's way),
  `np.savez(f, **arrays)` + fsync and `safetensors.numpy.save_file` + fsync of the file;
- local load latest: `manager.load_checkpoint()` (index read, header parse, crc32c of every array)
  against `np.fromfile` of the raw bytes file, `pickle.load`, `np.load(npz)[name]` per array and
  `safetensors.numpy.load_file`. Every side then touches its arrays (one byte read per 4 KiB page,
  timed), so a lazily mapped result pays for its page faults too;
- async save: the time `save_checkpoint(..., blocking=False)` blocks the caller against a blocking
  save of the same state (the background write is waited for untimed between rounds);
- select: a state of 100 leaves of the same total size; `load_checkpoint(select=["leaf_042"])`
  against a full `load_checkpoint()`, both touched as above, at least 15 rounds (each takes
  about 25 ms, and a median of 5 sub-millisecond timings is mostly noise);
- extra peak memory of a blocking save, in a subprocess: `ru_maxrss` after the save minus
  `ru_maxrss` before it (the state is built, and the manager opened, before the first reading),
  as % of the state's size;
- S3 save / load (per server started here on 127.0.0.1): the manager on `s3://bucket/ckpt` against
  boto3 `put_object` / `get_object(...)["Body"].read()` of the raw bytes on the same server;
- HDF5 / Zarr save: the manager in `x.h5/ckpt` / `x.zarr/ckpt` (the store kept open, a new iteration
  each round, the previous one deleted by retention) against h5py del + create_dataset per array
  + flush + fsync in one open file, and zarr create_array per array into a new folder (the previous
  round's folder removed inside the timed call), with and without an fsync of every file written;
  chunks and codecs on the raw side are the ones expstore chose, read back from its file.

Every save round is preceded by an untimed `os.sync()`, so no side pays for writeback another left
behind. Each pair runs interleaved (expstore, baseline, baseline, expstore, ...) after one untimed
warm-up round. Loads find the page cache warm.

Run from the repository root (the S3 rows need the dev extras):

    python benchmarks/checkpoint_bench.py                         # 256 MiB, 5 repeats, SeaweedFS
    python benchmarks/checkpoint_bench.py --size-mib 64 --repeat 3 --s3 none --json ckpt.json

Reading the table: ratio = expstore value / baseline value from the medians of the repeats (the
ratio of the best times in parentheses); times in ms, median (best). `ok?` judges the median ratio
against the target; rows without a target are for information. The memory row's ratio is the extra
peak over the state's size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pickle
import shlex
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import MiB, Row, bench_parser, machine, parse_bench_args, print_report, raw_write, run, scratch_folder, time_pair

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from expstore.backends.posix import fsync_path, fsync_tree  # noqa: E402
from expstore.checkpointing import CheckpointManager  # noqa: E402

N_ARRAYS = 10
N_LEAVES = 100
SELECTED = "leaf_042"
EXPERIMENT = "bench"
BUCKET = "expstore-bench"
PAGE = 4096

SAVE_TARGET = 1.15  # vs raw write + fsync
LOAD_TARGET = 1.2  # vs np.fromfile
PICKLE_TARGET = 1.0  # must not be slower than the seed's pickle
ASYNC_TARGET = 0.15
SELECT_TARGET = 0.02
SELECT_MIN_REPEAT = 15  # a sub-millisecond op: more rounds (cheap here) steady its median
MEMORY_TARGET = 0.10
S3_TARGET = 1.2
TREE_TARGET = None  # the issue names the comparison, not a target
PACKAGES = ("numpy", "safetensors", "h5py", "zarr", "boto3", "google-crc32c", "expstore")


# ---- state --------------------------------------------------------------------------------


def make_state(size_mib: int) -> dict[str, dict[str, np.ndarray]]:
    """10 float32 arrays of about equal size, the model's and the optimizer's, rows of 1024."""
    rng = np.random.default_rng(0)
    rows = max(1, size_mib * MiB // (N_ARRAYS * 1024 * 4))
    return {
        group: {f"{prefix}{i}": rng.random((rows, 1024), dtype=np.float32) for i in range(N_ARRAYS // 2)}
        for group, prefix in (("model", "w"), ("optimizer", "m"))
    }


def state_bytes(size_mib: int) -> int:
    return N_ARRAYS * max(1, size_mib * MiB // (N_ARRAYS * 1024 * 4)) * 1024 * 4


def make_leaves(size_mib: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    n = max(1, size_mib * MiB // (N_LEAVES * 4))
    return {f"leaf_{i:03d}": rng.random(n, dtype=np.float32) for i in range(N_LEAVES)}


def flat(state: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {f"{group}/{name}": a for group, arrays in state.items() for name, a in arrays.items()}


def nbytes(arrays: dict[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in arrays.values())


def touch(tree: Any) -> int:
    """Read one byte of every 4 KiB page of every array in `tree` (faults in a lazily mapped array)."""
    if isinstance(tree, dict):
        return sum(touch(v) for v in tree.values())
    if isinstance(tree, np.ndarray):
        return int(tree.reshape(-1).view(np.uint8)[::PAGE].sum())
    return 0


def check_state(what: str, got: Any, want: dict[str, dict[str, np.ndarray]]) -> None:
    got_flat = flat(got)
    if set(got_flat) != set(flat(want)) or any(not np.array_equal(got_flat[p], a) for p, a in flat(want).items()):
        raise RuntimeError(f"{what}: loaded a different state")


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


# ---- rows ---------------------------------------------------------------------------------


@dataclass
class MemRow:
    """Extra peak memory of one operation against the state's size (not a timing)."""

    operation: str
    baseline: str
    target: float | None
    size_bytes: int
    extra_bytes: int

    @property
    def ratio(self) -> float:
        return self.extra_bytes / self.size_bytes

    @property
    def ok(self) -> bool | None:
        return None if self.target is None else self.ratio <= self.target

    def cells(self) -> list[str]:
        return [
            self.operation,
            f"{self.extra_bytes / MiB:.1f} MiB extra peak",
            "-",
            self.baseline,
            f"{self.size_bytes / MiB:.1f} MiB",
            "-",
            f"{self.ratio:.3f}",
        ]

    def as_json(self) -> dict[str, Any]:
        return {"operation": self.operation, "baseline": self.baseline, "size_bytes": self.size_bytes,
                "extra_peak_bytes": self.extra_bytes, "ratio": self.ratio, "target": self.target, "ok": self.ok}


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e3:.1f} ({min(seconds) * 1e3:.1f})"


def mib_s(row: Row, seconds: list[float]) -> str:
    return f"{row.mib_s(statistics.median(seconds)):.0f}"


def cells(row: Row | MemRow) -> list[str]:
    if isinstance(row, MemRow):
        body = row.cells()
    else:
        body = [
            row.operation,
            ms(row.expstore_s),
            mib_s(row, row.expstore_s),
            row.baseline,
            ms(row.baseline_s),
            mib_s(row, row.baseline_s),
            f"{row.ratio:.3f} ({row.best_ratio:.3f})",
        ]
    # benchlib's table prints targets with one decimal, which turns 1.15 into 1.1 and 0.02 into 0.0
    return [*body, "-" if row.target is None else f"<= {row.target:g}", "-" if row.ok is None else "ok" if row.ok else "NO"]


def table(rows: list[Row | MemRow]) -> str:
    header = ["operation", "expstore ms", "MiB/s", "baseline", "baseline ms", "MiB/s", "ratio", "target", "ok?"]
    lines = [cells(row) for row in rows]
    widths = [max(len(c[i]) for c in [header, *lines]) for i in range(len(header))]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *lines]]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


# ---- local --------------------------------------------------------------------------------


def local_rows(folder: Path, state: dict[str, dict[str, np.ndarray]], repeat: int) -> list[Row]:
    import safetensors.numpy

    arrays = flat(state)
    size = nbytes(arrays)
    data = b"".join(a.tobytes() for a in arrays.values())
    paths = {name: folder / name for name in ("raw.bin", "state.pkl", "state.npz", "state.safetensors")}
    counter = Counter()
    rows: list[Row] = []

    def pickle_save() -> None:
        with open(paths["state.pkl"], "wb") as f:
            pickle.dump(state, f, protocol=5)
            f.flush()
            os.fsync(f.fileno())

    def savez() -> None:
        with open(paths["state.npz"], "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())

    def st_save() -> None:
        safetensors.numpy.save_file(arrays, paths["state.safetensors"])
        fsync_path(paths["state.safetensors"])

    def pickle_load() -> Any:
        with open(paths["state.pkl"], "rb") as f:
            got = pickle.load(f)
        touch(got)
        return got

    def npz_load() -> Any:
        with np.load(paths["state.npz"]) as z:
            got = {name: z[name] for name in z.files}
        touch(got)
        return got

    def st_load() -> Any:
        got = safetensors.numpy.load_file(paths["state.safetensors"])
        touch(got)
        return got

    def fromfile() -> Any:
        got = np.fromfile(paths["raw.bin"], dtype=np.uint8)
        touch(got)
        return got

    with CheckpointManager(str(folder / "ckpt"), EXPERIMENT, keep_last_n=1) as manager:

        def save() -> None:
            manager.save_checkpoint(state, counter.next())

        def load() -> Any:
            got = manager.load_checkpoint()
            touch(got["state"])
            return got

        saves = [
            ("local save", "open+write+fsync", SAVE_TARGET, lambda: raw_write(paths["raw.bin"], data)),
            ("local save", "pickle.dump p5+fsync", PICKLE_TARGET, pickle_save),
            ("local save", "np.savez+fsync", None, savez),
            ("local save", "safetensors save_file+fsync", None, st_save),
        ]
        def settle() -> None:  # background work of the manager (retention deletes, async writes) is untimed
            manager.wait_until_finished()
            os.sync()

        for operation, baseline, target, op in saves:
            rows.append(Row(operation, baseline, target, size, *time_pair(save, op, repeat, settle)))
        loads = [
            ("local load latest", "np.fromfile", LOAD_TARGET, fromfile),
            ("local load latest", "pickle.load", PICKLE_TARGET, pickle_load),
            ("local load latest", "np.load(npz)[each]", None, npz_load),
            ("local load latest", "safetensors load_file", None, st_load),
        ]
        for operation, baseline, target, op in loads:
            rows.append(Row(operation, baseline, target, size, *time_pair(load, op, repeat)))
        check_state("local load", manager.load_checkpoint()["state"], state)

        def async_save() -> None:
            manager.save_checkpoint(state, counter.next(), blocking=False)

        blocked = time_pair(async_save, save, repeat, settle)
        manager.wait_until_finished()
        rows.append(Row("async save (caller blocked)", "blocking save", ASYNC_TARGET, size, *blocked))
    return rows


def select_rows(folder: Path, size_mib: int, repeat: int) -> list[Row]:
    leaves = make_leaves(size_mib)
    with CheckpointManager(str(folder / "leaves"), EXPERIMENT, keep_last_n=1) as manager:
        manager.save_checkpoint(leaves, 1)

        def one() -> Any:
            got = manager.load_checkpoint(select=[SELECTED])
            touch(got["state"])
            return got

        def full() -> Any:
            got = manager.load_checkpoint()
            touch(got["state"])
            return got

        times = time_pair(one, full, max(repeat, SELECT_MIN_REPEAT))
        got = manager.load_checkpoint(select=[SELECTED])["state"]
        if list(got) != [SELECTED] or not np.array_equal(got[SELECTED], leaves[SELECTED]):
            raise RuntimeError(f"select: got {list(got)} instead of [{SELECTED!r}] or different data")
    return [Row(f"select 1 of {N_LEAVES} leaves", "full load", SELECT_TARGET, nbytes(leaves), *times)]


# ---- peak memory --------------------------------------------------------------------------

PEAK_CHILD = textwrap.dedent(
    """
    import gc, json, pickle, os, resource, sys
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    from checkpoint_bench import make_state
    from expstore.checkpointing.manager import CheckpointManager
    folder, size_mib, mode = sys.argv[3], int(sys.argv[4]), sys.argv[5]
    state = make_state(size_mib)
    manager = CheckpointManager(os.path.join(folder, "peak-" + mode), "bench", keep_last_n=1)
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "save":
        manager.save_checkpoint(state, 1)
    elif mode == "async":
        manager.save_checkpoint(state, 1, blocking=False)
        manager.wait_until_finished()
    elif mode == "pickle":
        with open(os.path.join(folder, "peak.pkl"), "wb") as f:
            pickle.dump(state, f, protocol=5)
            f.flush()
            os.fsync(f.fileno())
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    manager.close()
    hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
    print(json.dumps({"before_kib": before, "after_kib": after, "vmhwm_kib": hwm[0] if hwm else None}))
    """
)


def peak_extra(folder: Path, size_mib: int, mode: str) -> int:
    """Extra peak RSS in bytes of one `mode` save in a fresh interpreter (ru_maxrss is in KiB on Linux).

    Linux carries ru_maxrss over fork + exec, so the child starts with this process's peak: run this
    before this process allocates anything big (main() does), and the check below refuses a reading
    whose baseline is not the child's own (its "before" must be at least the state's size).
    """
    out = subprocess.run(
        [sys.executable, "-c", PEAK_CHILD, str(REPO_ROOT), str(Path(__file__).resolve().parent), str(folder),
         str(size_mib), mode],
        check=False, capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"peak memory subprocess ({mode}) failed:\n{out.stderr}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    if got["vmhwm_kib"] is not None and got["before_kib"] > got["vmhwm_kib"]:
        raise RuntimeError(f"peak memory ({mode}): ru_maxrss before the save ({got['before_kib']} KiB) exceeds the"
                           f" child's own peak ({got['vmhwm_kib']} KiB): inherited from the parent")
    return max(0, got["after_kib"] - got["before_kib"]) * 1024


def memory_rows(folder: Path, size_mib: int) -> tuple[list[MemRow], list[str]]:
    size = state_bytes(size_mib)
    extra = {mode: peak_extra(folder, size_mib, mode) for mode in ("save", "async", "pickle")}
    rows = [MemRow("save extra peak RSS", "state size", MEMORY_TARGET, size, extra["save"])]
    note = (
        "memory: each in a fresh subprocess, ru_maxrss after the call minus before it (state built first);"
        f" for information: async save (host copy + background write) {extra['async'] / MiB:.1f} MiB"
        f" ({extra['async'] / size:.0%} of the state), pickle.dump p5 + fsync {extra['pickle'] / MiB:.1f} MiB"
        f" ({extra['pickle'] / size:.0%})"
    )
    return rows, [note]


# ---- S3 -----------------------------------------------------------------------------------


def start_quiet_moto() -> Any:
    from tests import s3servers

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return s3servers.start_moto()


def start_seaweedfs() -> Any:
    from tests import s3servers

    return s3servers.start_seaweedfs()


@contextlib.contextmanager
def s3_server(name: str) -> Iterator[Any]:
    server = {"seaweedfs": start_seaweedfs, "moto": start_quiet_moto}[name]()
    try:
        yield server
    finally:
        server.stop()


def s3_rows(name: str, state: dict[str, dict[str, np.ndarray]], repeat: int) -> list[Row]:
    arrays = flat(state)
    size = nbytes(arrays)
    data = b"".join(a.tobytes() for a in arrays.values())
    key = "boto3/raw.bin"
    counter = Counter()
    with s3_server(name) as server:
        client = server.boto3_client()
        client.create_bucket(Bucket=BUCKET)
        with CheckpointManager(f"s3://{BUCKET}/ckpt", EXPERIMENT, keep_last_n=1, **server.storage_options) as manager:

            def load() -> Any:
                got = manager.load_checkpoint()
                touch(got["state"])
                return got

            def get() -> Any:
                got = np.frombuffer(client.get_object(Bucket=BUCKET, Key=key)["Body"].read(), dtype=np.uint8)
                touch(got)
                return got

            saves = time_pair(
                lambda: manager.save_checkpoint(state, counter.next()),
                lambda: client.put_object(Bucket=BUCKET, Key=key, Body=data),
                repeat,
            )
            loads = time_pair(load, get, repeat)
            check_state(f"s3 ({name})", manager.load_checkpoint()["state"], state)
    return [
        Row(f"s3 save ({name})", "boto3 put_object", S3_TARGET, size, *saves),
        Row(f"s3 load latest ({name})", "boto3 get_object+read", S3_TARGET, size, *loads),
    ]


# ---- HDF5 / Zarr --------------------------------------------------------------------------


def hdf5_rows(folder: Path, state: dict[str, dict[str, np.ndarray]], repeat: int) -> tuple[list[Row], list[str]]:
    import h5py

    arrays = flat(state)
    path = folder / "x.h5"
    counter = Counter()
    with contextlib.ExitStack() as stack:
        manager = stack.enter_context(CheckpointManager(f"{path}/ckpt", EXPERIMENT, keep_last_n=1))
        manager.save_checkpoint(state, counter.next())
        with h5py.File(path, "r", locking=False) as probe:
            found: dict[str, Any] = {}

            def visit(name: str, obj: Any) -> None:  # returning a value would stop visititems
                if isinstance(obj, h5py.Dataset):
                    found[name] = obj.chunks

            probe.visititems(visit)
        chunks = {p: next((c for name, c in found.items() if name.endswith("/" + p)), None) for p in arrays}
        raw = stack.enter_context(h5py.File(folder / "raw.h5", "w"))

        def raw_rewrite() -> None:
            for p, a in arrays.items():
                if p in raw:
                    del raw[p]
                raw.create_dataset(p, data=a, chunks=chunks[p])
            raw.flush()
            os.fsync(raw.id.get_vfd_handle())

        times = time_pair(lambda: manager.save_checkpoint(state, counter.next()), raw_rewrite, repeat, os.sync)
        check_state("hdf5", manager.load_checkpoint()["state"], state)
    notes = [
        f"hdf5: chunks {sorted({str(c) for c in chunks.values()})} on both sides (expstore's, read back); the"
        " manager keeps x.h5 open, saves a new iteration and deletes the previous one; h5py deletes and recreates"
        " the datasets in one open file + flush + fsync"
    ]
    return [Row("hdf5 save (x.h5/ckpt)", "h5py del+create_dataset+fsync", TREE_TARGET, nbytes(arrays), *times)], notes


def zarr_rows(
    folder: Path, state: dict[str, dict[str, np.ndarray]], repeat: int, with_unsynced: bool = False
) -> tuple[list[Row], list[str]]:
    import zarr
    from zarr.storage import LocalStore

    arrays = flat(state)
    root = folder / "x.zarr"
    counter = Counter()
    with CheckpointManager(f"{root}/ckpt", EXPERIMENT, keep_last_n=1) as manager:
        manager.save_checkpoint(state, counter.next())
        found: dict[str, Any] = {}
        for meta in root.rglob("zarr.json"):
            doc = json.loads(meta.read_text())
            if doc.get("node_type") == "array":
                found[str(meta.parent.relative_to(root))] = meta.parent
        options: dict[str, dict[str, Any]] = {}
        for p in arrays:
            where = next(d for rel, d in found.items() if rel.endswith("/" + p) or rel == p)
            a = zarr.open_array(store=LocalStore(where), mode="r", zarr_format=3)
            if a.shards is not None:
                raise RuntimeError("zarr: expstore wrote sharded arrays; this baseline does not shard")
            options[p] = {"chunks": a.chunks, "filters": a.filters, "compressors": a.compressors,
                          "serializer": a.serializer}
        raw_parent = folder / "raw"
        raw_parent.mkdir()

        def raw_new(fsync: bool) -> None:
            for old in list(raw_parent.iterdir()):  # the previous round's copy, as retention deletes it
                shutil.rmtree(old)
            target = raw_parent / f"{counter.next()}.zarr"
            store = LocalStore(target)
            zarr.create_group(store=store)
            for p, a in arrays.items():
                zarr.create_array(store=store, name=p, data=a, **options[p])
            if fsync:
                fsync_tree(target)

        def save() -> None:
            manager.save_checkpoint(state, counter.next())

        plain = time_pair(save, lambda: raw_new(False), repeat, os.sync) if with_unsynced else None
        synced = time_pair(save, lambda: raw_new(True), repeat, os.sync)
        check_state("zarr", manager.load_checkpoint()["state"], state)
    one = next(iter(options.values()))
    notes = [
        f"zarr: chunks {one['chunks']}, compressors {one['compressors'] or '()'} on both sides (expstore's, read"
        " back); the manager saves a new iteration and deletes the previous; zarr create_array into a new folder"
        " after removing the previous round's, + an fsync of every file and folder written (zarr itself never"
        " fsyncs; --zarr-no-fsync adds the row without it, as tree_bench.py has)"
    ]
    size = nbytes(arrays)
    rows = [Row("zarr save (x.zarr/ckpt)", "zarr create_array+fsync each", TREE_TARGET, size, *synced)]
    if plain is not None:
        rows.insert(0, Row("zarr save (x.zarr/ckpt)", "zarr create_array (no fsync)", TREE_TARGET, size, *plain))
    return rows, notes


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__.split("\n\n")[0], size_help="state size in MiB, over 10 arrays (default 256)")
    parser.add_argument(
        "--s3", choices=["seaweedfs", "moto", "none"], default="seaweedfs",
        help="S3 server to start on 127.0.0.1 and measure (default seaweedfs)",
    )
    parser.add_argument("--no-trees", action="store_true", help="skip the HDF5 and Zarr rows")
    parser.add_argument(
        "--zarr-no-fsync", action="store_true",
        help="also time zarr against create_array without fsync (about 45 s more at 256 MiB)",
    )
    return parse_bench_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    rows: list[Row | MemRow] = []
    with scratch_folder(args.dir, "checkpoint-bench-mem-") as scratch:
        # first, while this process is small: Linux hands its ru_maxrss on to the children
        mem_rows, mem_notes = memory_rows(scratch, args.size_mib)
    state = make_state(args.size_mib)
    size = nbytes(flat(state))
    shape = next(iter(flat(state).values())).shape
    notes = [
        f"state: {size / MiB:.1f} MiB of random float32 in {N_ARRAYS} arrays of shape {shape}; select: {N_LEAVES}"
        f" leaves of the same total size; median of {args.repeat} repeats ({max(args.repeat, SELECT_MIN_REPEAT)} for"
        " select, a sub-millisecond op alternating with full loads), best in parentheses; ratio ="
        " expstore / baseline; ok? judges the median ratio",
        "saves: untimed os.sync() before every timed save; the manager (keep_last_n=1) saves a new iteration"
        " each round, so its time includes the index commit; deleting the previous checkpoint runs behind the"
        " caller and is waited for untimed, with the os.sync(); the file baselines truncate and rewrite one file",
        "loads: page cache warm; every side touches one byte per 4 KiB page of every array it returns (timed);"
        " expstore's local load maps the file (MAP_PRIVATE) and checks every array's crc32c",
        "async: the time save_checkpoint(blocking=False) takes to return (it copies the arrays into host buffers the"
        " manager reuses from save to save, then starts a thread); the background write is waited for before the next round, untimed",
    ]
    with scratch_folder(args.dir, "checkpoint-bench-") as scratch:
        for name, fn in (("local", lambda f: local_rows(f, state, args.repeat)),
                         ("select", lambda f: select_rows(f, args.size_mib, args.repeat))):
            folder = scratch / name
            folder.mkdir()
            rows += fn(folder)
            shutil.rmtree(folder, ignore_errors=True)
        rows += mem_rows
        notes += mem_notes
        if not args.no_trees:
            zarr_fn = lambda f, st, r: zarr_rows(f, st, r, args.zarr_no_fsync)  # noqa: E731
            for name, tree_fn in (("hdf5", hdf5_rows), ("zarr", zarr_fn)):
                folder = scratch / name
                folder.mkdir()
                try:
                    tree_rows, tree_notes = tree_fn(folder, state, args.repeat)
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
                rows += tree_rows
                notes += tree_notes
    if args.s3 != "none":
        rows += s3_rows(args.s3, state, args.repeat)
        if args.s3 == "moto":
            notes.append("moto runs in this process (ThreadedMotoServer): server and client share the GIL")

    command = f"{shlex.join(sys.orig_argv)} ({time.perf_counter() - started:.0f} s)"
    print_report(
        rows, notes, machine(PACKAGES), command, args.json, render=table, size_mib=args.size_mib, repeat=args.repeat
    )
    return 0


if __name__ == "__main__":
    run(main, "interrupted: local files removed, S3 server stopped")
