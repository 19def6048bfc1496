"""Tree throughput of the HDF5 and Zarr stores against the raw h5py / zarr calls, as time ratios from one run.

What it measures, for one tree of 8 float32 arrays (`{"model": {"w0": ..., "w7": ...}}`, each
`(8 * size_mib, 4096)`) holding `--size-mib` MiB of random data in all, generated once:

- hdf5 write_tree: `open_store("<n>.h5")` + `write_tree` + `close`, a new key in a new file (the
  store journals and fsyncs each commit), against `h5py.File(path, "w")` + `create_dataset(name,
  data=a, chunks=<expstore's chunk shape>)` per array + `flush()` + `os.fsync` + `close`;
- hdf5 rewrite: `write_tree` of the same key in one open store (the new data lands partly in space
  HDF5 reuses, which the journal writes twice) against deleting and recreating the datasets in one
  open `h5py.File` + `flush()` + `os.fsync`;
- hdf5 read_tree against `ds[()]` of every dataset, both from the file expstore wrote (h5py keeps
  it open with `locking=False` while expstore opens it per operation);
- hdf5 small write_tree / read_tree: per-operation latency of a 4 KiB tree (2 arrays and a few
  scalars), SMALL_OPS operations per timed round, rewriting and reading one key in one open store,
  against what the store does per operation in plain h5py: `h5py.File(path, "a")` + del +
  create_dataset + flush + `os.fsync` + close, and `h5py.File(path, "r")` + `ds[()]` + close;
- zarr write_tree: `open_store("<n>.zarr")` + `write_tree` + `close`, a new key in a new folder,
  against `zarr.create_group` + `zarr.create_array(store=LocalStore(path), name=..., data=...,
  chunks=, filters=, compressors=, serializer=)` per array, with the chunk shape and codecs read
  back from the arrays expstore wrote; zarr itself never fsyncs, expstore's Zarr store fsyncs every
  file of the new version before switching the key to it, so a second row times the same baseline
  followed by an fsync of every file and folder it wrote;
- zarr read_tree against `zarr.open_array(...)[...]` of each array expstore wrote;
- local write: `LocalStore.write` of the 8 arrays concatenated into one bytes value against
  `open(path, "wb")` + write + flush + `os.fsync`, both overwriting their file (as store_bench.py);
- derived rows: hdf5 and zarr write_tree time over local bytes write time, from the medians above.

Each write round gets a fresh file or folder; the previous round's are removed and `os.sync()` runs
before every timed write (untimed), so no side pays for writeback the other left behind. Each pair
runs interleaved (expstore, baseline, baseline, expstore, ...) after one untimed warm-up round.
Reads find the page cache warm.

Run from the repository root:

    python benchmarks/tree_bench.py                          # 256 MiB, 5 repeats, hdf5 + zarr + local
    python benchmarks/tree_bench.py --size-mib 64 --repeat 3 --backends hdf5 --json tree.json

Reading the table: ratio = expstore time / baseline time, from the medians of the repeats (the
ratio of the best times in parentheses); below 1 means expstore is faster than the baseline.
`ok?` compares the median ratio with the target: <= 1.3 against h5py and zarr, <= 1.1 for the
local bytes write (store_bench.py's target); derived rows and the small-tree latency rows (times
are per operation there) have no target.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import MiB, Row, bench_parser, machine, parse_bench_args, print_report, raw_write, run, scratch_folder, time_pair

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import expstore  # noqa: E402
from expstore.backends.posix import fsync_tree  # noqa: E402  (what the Zarr store does to a new version)

N_ARRAYS = 8
SMALL_OPS = 50  # small-tree operations per timed round
COLUMNS = 4096
TREE_KEY = "ckpt"
BYTES_KEY = "ckpt.bin"
LIBRARY_TARGET = 1.3
LOCAL_TARGET = 1.1
BACKENDS = ("hdf5", "zarr", "local")
PACKAGES = ("numpy", "h5py", "zarr", "expstore")


def derived(operation: str, numerator: Row, denominator: Row) -> Row:
    """`numerator`'s expstore times over `denominator`'s expstore times (same size: same data)."""
    return Row(
        operation,
        f"{denominator.operation} (derived)",
        None,
        numerator.size_bytes,
        numerator.expstore_s,
        denominator.expstore_s,
    )


def row_json(row: Row) -> dict[str, Any]:
    """`row.as_json()` with a `derived` flag after the baseline."""
    fields = row.as_json()
    head = {key: fields.pop(key) for key in ("operation", "baseline")}
    return {**head, "derived": row.baseline.endswith("(derived)"), **fields}


# ---- timing -------------------------------------------------------------------------------


class FreshPaths:
    """A new file or folder name per write round, in folders emptied before each timed write."""

    def __init__(self, root: Path, suffix: str, sides: tuple[str, ...] = ("expstore", "raw")):
        self.folders = {side: root / f"new-{side}" for side in sides}
        self.suffix = suffix
        self.count = 0
        for folder in self.folders.values():
            folder.mkdir()

    def next(self, side: str) -> Path:
        self.count += 1
        return self.folders[side] / f"{self.count}{self.suffix}"

    def clear(self) -> None:
        """Remove what earlier rounds wrote and flush the rest, untimed: each round starts clean."""
        for folder in self.folders.values():
            for entry in folder.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        os.sync()


def make_tree(size_mib: int) -> dict[str, dict[str, np.ndarray]]:
    rows = size_mib * MiB // (N_ARRAYS * COLUMNS * 4)
    rng = np.random.default_rng(0)
    return {"model": {f"w{i}": rng.random((rows, COLUMNS), dtype=np.float32) for i in range(N_ARRAYS)}}


def flat(tree: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The tree's arrays by path, as expstore names them: `model/w0`..."""
    return {f"model/{name}": array for name, array in tree["model"].items()}


def check_tree(backend: str, got: Any, tree: dict[str, dict[str, np.ndarray]]) -> None:
    want = flat(tree)
    if not isinstance(got, dict) or set(flat(got)) != set(want):
        raise RuntimeError(f"{backend}: read_tree returned a different tree structure")
    for path, array in flat(got).items():
        if array.dtype != want[path].dtype or not np.array_equal(array, want[path]):
            raise RuntimeError(f"{backend}: read_tree returned different data for {path!r}")


def check_arrays(backend: str, got: dict[str, np.ndarray], tree: dict[str, dict[str, np.ndarray]]) -> None:
    for path, array in flat(tree).items():
        if not np.array_equal(got[path], array):
            raise RuntimeError(f"{backend}: the baseline read different data for {path!r}")


# ---- HDF5 ---------------------------------------------------------------------------------


def hdf5_rows(folder: Path, tree: dict[str, dict[str, np.ndarray]], repeat: int) -> tuple[list[Row], list[str]]:
    import h5py

    arrays = flat(tree)
    size = sum(a.nbytes for a in arrays.values())
    with contextlib.ExitStack() as stack:
        # The store for rewrites and reads; its first write also shows the chunk shape expstore picks.
        main_path = folder / "main.h5"
        store = stack.enter_context(expstore.open_store(str(main_path)))
        store.write_tree(TREE_KEY, tree)
        with h5py.File(main_path, "r", locking=False) as probe:
            chunks = {path: probe[f"{TREE_KEY}/{path}"].chunks for path in arrays}
            compression = {probe[f"{TREE_KEY}/{path}"].compression for path in arrays}

        fresh = FreshPaths(folder, ".h5")

        def expstore_new() -> None:
            with expstore.open_store(str(fresh.next("expstore"))) as new:
                new.write_tree(TREE_KEY, tree)

        def raw_new() -> None:
            with h5py.File(fresh.next("raw"), "w") as f:
                for path, array in arrays.items():
                    f.create_dataset(path, data=array, chunks=chunks[path])
                f.flush()
                os.fsync(f.id.get_vfd_handle())

        writes = time_pair(expstore_new, raw_new, repeat, fresh.clear)
        fresh.clear()

        raw_file = stack.enter_context(h5py.File(folder / "raw-rewrite.h5", "w"))

        def raw_rewrite() -> None:
            for path, array in arrays.items():
                if path in raw_file:
                    del raw_file[path]
                raw_file.create_dataset(path, data=array, chunks=chunks[path])
            raw_file.flush()
            os.fsync(raw_file.id.get_vfd_handle())

        rewrites = time_pair(lambda: store.write_tree(TREE_KEY, tree), raw_rewrite, repeat, os.sync)

        reader = stack.enter_context(h5py.File(main_path, "r", locking=False))

        def raw_read() -> dict[str, np.ndarray]:
            # Opened after the last rewrite: expstore changes the file no more from here on.
            return {path: reader[f"{TREE_KEY}/{path}"][()] for path in arrays}

        reads = time_pair(lambda: store.read_tree(TREE_KEY), raw_read, repeat)
        check_tree("hdf5", store.read_tree(TREE_KEY), tree)
        check_arrays("hdf5", raw_read(), tree)

    small_rows = hdf5_small_rows(folder, repeat)
    chunk_shapes = sorted({str(c) for c in chunks.values()})
    notes = [
        f"hdf5: chunks {', '.join(chunk_shapes)} on both sides (expstore's choice, read back from its file),"
        f" compression {', '.join(sorted(str(c) for c in compression))}; the write row times open_store + write_tree"
        " + close of a new file, against h5py.File('w') + create_dataset + flush + fsync + close"
    ]
    rows = [
        Row("hdf5 write_tree", "h5py create_dataset+flush+fsync", LIBRARY_TARGET, size, *writes),
        Row("hdf5 rewrite", "h5py del+create_dataset+flush+fsync", LIBRARY_TARGET, size, *rewrites),
        Row("hdf5 read_tree", "h5py ds[()]", LIBRARY_TARGET, size, *reads),
        *small_rows,
    ]
    return rows, notes


def hdf5_small_rows(folder: Path, repeat: int) -> list[Row]:
    """Latency of SMALL_OPS rewrites and reads of a 4 KiB tree, against h5py opening the file per operation."""
    import h5py

    small = {"w": np.arange(256, dtype=np.float64), "b": np.arange(256, dtype=np.int64), "step": 3, "lr": 0.1}
    small_arrays = {"w": small["w"], "b": small["b"]}
    size = sum(a.nbytes for a in small_arrays.values())
    raw_path = folder / "raw-small.h5"
    h5py.File(raw_path, "w").close()
    with expstore.open_store(str(folder / "small.h5")) as store:

        def expstore_writes() -> None:
            for _ in range(SMALL_OPS):
                store.write_tree("small", small)

        def raw_writes() -> None:
            for _ in range(SMALL_OPS):
                with h5py.File(raw_path, "a") as f:
                    for name, array in small_arrays.items():
                        if name in f:
                            del f[name]
                        f.create_dataset(name, data=array)
                    f.flush()
                    os.fsync(f.id.get_vfd_handle())

        def expstore_reads() -> None:
            for _ in range(SMALL_OPS):
                store.read_tree("small")

        def raw_reads() -> None:
            for _ in range(SMALL_OPS):
                with h5py.File(raw_path, "r") as f:
                    {name: f[name][()] for name in small_arrays}

        writes = time_pair(expstore_writes, raw_writes, repeat)
        reads = time_pair(expstore_reads, raw_reads, repeat)
    per_op = [[t / SMALL_OPS for t in times] for times in (*writes, *reads)]
    return [
        Row("hdf5 small write_tree", "h5py open+del+create+fsync+close", None, size, per_op[0], per_op[1]),
        Row("hdf5 small read_tree", "h5py open+ds[()]+close", None, size, per_op[2], per_op[3]),
    ]


# ---- Zarr ---------------------------------------------------------------------------------


def zarr_rows(folder: Path, tree: dict[str, dict[str, np.ndarray]], repeat: int) -> tuple[list[Row], list[str]]:
    import zarr
    from zarr.storage import LocalStore

    arrays = flat(tree)
    size = sum(a.nbytes for a in arrays.values())
    main_path = folder / "main.zarr"
    with expstore.open_store(str(main_path)) as store:
        store.write_tree(TREE_KEY, tree)
        main = LocalStore(main_path)

        def child() -> str:
            """The folder of the key's live version (one `v-<token>` child after a completed write)."""
            versions = [p.name for p in (main_path / TREE_KEY).iterdir() if p.name.startswith("v-")]
            if len(versions) != 1:
                raise RuntimeError(f"zarr: expected one version folder under {TREE_KEY!r}, found {versions}")
            return f"{TREE_KEY}/{versions[0]}"

        version = child()
        layout = {
            path: zarr.open_array(store=main, path=f"{version}/{path}", mode="r", zarr_format=3) for path in arrays
        }
        options = {
            path: {"chunks": a.chunks, "filters": a.filters, "compressors": a.compressors, "serializer": a.serializer}
            for path, a in layout.items()
        }
        if any(a.shards is not None for a in layout.values()):
            raise RuntimeError("zarr: expstore wrote sharded arrays; this baseline does not shard")

        fresh = FreshPaths(folder, ".zarr")

        def expstore_new() -> None:
            with expstore.open_store(str(fresh.next("expstore"))) as new:
                new.write_tree(TREE_KEY, tree)

        def raw_new(fsync: bool = False) -> None:
            root = fresh.next("raw")
            raw = LocalStore(root)
            zarr.create_group(store=raw)
            for path, array in arrays.items():
                zarr.create_array(store=raw, name=path, data=array, **options[path])
            if fsync:
                fsync_tree(root)

        writes = time_pair(expstore_new, raw_new, repeat, fresh.clear)
        fsynced_writes = time_pair(expstore_new, lambda: raw_new(fsync=True), repeat, fresh.clear)
        fresh.clear()

        def raw_read() -> dict[str, np.ndarray]:
            return {
                path: zarr.open_array(store=main, path=f"{version}/{path}", mode="r", zarr_format=3)[...]
                for path in arrays
            }

        reads = time_pair(lambda: store.read_tree(TREE_KEY), raw_read, repeat)
        check_tree("zarr", store.read_tree(TREE_KEY), tree)
        check_arrays("zarr", raw_read(), tree)

    one = next(iter(options.values()))
    codecs = (
        f"filters {one['filters'] or '()'}, compressors {one['compressors'] or '()'}, serializer {one['serializer']}"
    )
    notes = [
        f"zarr: chunks {sorted({str(o['chunks']) for o in options.values()})[0]} and {codecs} on both sides"
        " (read back from the arrays expstore wrote); the write row times open_store + write_tree + close of a new"
        " folder, against create_group + create_array per array",
        "zarr: zarr does not fsync, so the raw zarr write ends in the page cache; expstore's Zarr store fsyncs every"
        " chunk file and folder of the new version, then writes the key's pointer by temp file + fsync + rename;"
        " the second zarr write_tree row (extra to the issue's list) adds that fsync of every file and folder to the"
        " baseline, to show what the store costs beyond durability",
    ]
    rows = [
        Row("zarr write_tree", "zarr create_array (no fsync)", LIBRARY_TARGET, size, *writes),
        Row("zarr write_tree", "zarr create_array+fsync each file", LIBRARY_TARGET, size, *fsynced_writes),
        Row("zarr read_tree", "zarr open_array[...]", LIBRARY_TARGET, size, *reads),
    ]
    return rows, notes


# ---- local bytes ----------------------------------------------------------------------------


def local_rows(folder: Path, tree: dict[str, dict[str, np.ndarray]], repeat: int) -> tuple[list[Row], list[str]]:
    """Both sides overwrite an existing file of the same size in every timed round, as in store_bench.py."""
    data = b"".join(a.tobytes() for a in flat(tree).values())
    raw_path = folder / "raw" / BYTES_KEY
    raw_path.parent.mkdir()
    with expstore.open_store(str(folder / "local")) as store:
        writes = time_pair(lambda: store.write(BYTES_KEY, data), lambda: raw_write(raw_path, data), repeat, os.sync)
        if store.read(BYTES_KEY) != data:
            raise RuntimeError("local: read back different bytes")
    notes = ["local: the 8 arrays concatenated into one bytes value; both sides overwrite their file each round"]
    return [Row("local bytes write", "open+write+fsync", LOCAL_TARGET, len(data), *writes)], notes


# ---- report -------------------------------------------------------------------------------


def hdf5_version() -> list[str]:
    """The HDF5 library's version for the machine line, or nothing without h5py."""
    try:
        import h5py
    except ImportError:
        return []
    return [f"HDF5 {h5py.version.hdf5_version}"]


# ---- main ---------------------------------------------------------------------------------


def parse_backends(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(BACKENDS)}, got {text!r}")
    return [name for name in BACKENDS if name in names]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__.split("\n\n")[0], size_help="tree size in MiB, over 8 arrays (default 256)")
    parser.add_argument(
        "--backends",
        type=parse_backends,
        default=list(BACKENDS),
        help="comma-separated subset of hdf5,zarr,local to measure (default all)",
    )
    return parse_bench_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tree = make_tree(args.size_mib)
    shape = next(iter(flat(tree).values())).shape

    rows: list[Row] = []
    notes = [
        f"{args.size_mib} MiB of random float32 in {N_ARRAYS} arrays of shape {shape}; median of {args.repeat}"
        " repeats, best in parentheses; ratio = expstore time / baseline time; ok? judges the median ratio",
        "writes: a fresh file or folder per round (rewrite and local: the same one), earlier rounds' files removed"
        " and os.sync() before every timed write; reads: page cache warm",
    ]
    measured: dict[str, Row] = {}
    with scratch_folder(args.dir, "tree-bench-") as scratch:
        for backend in args.backends:
            folder = scratch / backend
            folder.mkdir()
            try:
                backend_rows, backend_notes = {"hdf5": hdf5_rows, "zarr": zarr_rows, "local": local_rows}[backend](
                    folder, tree, args.repeat
                )
            finally:
                shutil.rmtree(folder, ignore_errors=True)  # the next backend starts with the disk space back
            rows += backend_rows
            notes += backend_notes
            for row in backend_rows:
                measured.setdefault(row.operation, row)  # zarr write_tree: the row, against zarr without fsync
    local = measured.get("local bytes write")
    if local is not None:
        for backend in ("hdf5", "zarr"):
            if f"{backend} write_tree" in measured:
                tree_row = measured[f"{backend} write_tree"]
                rows.append(derived(f"{backend} write_tree / local bytes write", tree_row, local))
        if rows and rows[-1].baseline.endswith("(derived)"):
            notes.append("derived rows: expstore's tree write time over its bytes write time of the same data")

    command = shlex.join(sys.orig_argv)
    print_report(
        rows, notes, machine(PACKAGES, hdf5_version()), command, args.json, row_json,
        size_mib=args.size_mib, repeat=args.repeat, backends=args.backends, array_shape=list(shape), arrays=N_ARRAYS,
    )
    return 0


if __name__ == "__main__":
    run(main, "interrupted: stores closed, benchmark files removed")
