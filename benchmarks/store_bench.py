"""Store throughput against the raw operation it wraps, as time ratios measured in one run.

What it measures, for one value of `--size-mib` random bytes:

- local write: `LocalStore.write` (temp file + fsync + os.replace + folder fsync) against
  `open(path, "wb")` + write + flush + `os.fsync` on the same filesystem;
- local read: `LocalStore.read` against `np.fromfile` of the same file (page cache warm unless
  `--drop-caches` is given and permitted);
- S3 write / read, per server started here on 127.0.0.1 (SeaweedFS, moto): `S3Store.write` /
  `S3Store.read` against boto3 `put_object` / `get_object(...)["Body"].read()` of the same bytes
  on the same server and bucket, each side under its own key.

Each pair runs interleaved (expstore, baseline, baseline, expstore, ...) after one untimed
warm-up round, so drifts in disk or server state hit both sides alike.

Run from the repository root (needs the dev extras for the S3 servers and boto3):

    python benchmarks/store_bench.py                        # 256 MiB, 5 repeats, SeaweedFS
    python benchmarks/store_bench.py --size-mib 64 --repeat 3 --s3 both --json bench.json

Reading the table: ratio = expstore time / baseline time, from the medians of the repeats (the
ratio of the best times in parentheses). 1.00 means no overhead, 1.10 means expstore takes 10 %
longer than the raw operation; below 1 means expstore is faster than the baseline.
`ok?` compares the median ratio with the target: local write and read <= 1.1, S3 <= 1.2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from benchlib import MiB, Row, bench_parser, machine, parse_bench_args, print_report, raw_write, run, scratch_folder, time_pair

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import expstore  # noqa: E402
from tests import s3servers  # noqa: E402

KEY = "bench.bin"
BUCKET = "expstore-bench"
LOCAL_TARGET = 1.1
S3_TARGET = 1.2
PACKAGES = ("numpy", "s3fs", "boto3", "expstore")


def start_quiet_moto() -> s3servers.S3Server:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    return s3servers.start_moto()


S3_SERVERS: dict[str, Callable[[], s3servers.S3Server]] = {
    "seaweedfs": s3servers.start_seaweedfs,
    "moto": start_quiet_moto,
}


# ---- timing -------------------------------------------------------------------------------


def drop_page_cache() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def cache_mode(requested: bool) -> tuple[Callable[[], None] | None, str]:
    """The hook to run before each timed local read, and the cache state to print."""
    if not requested:
        return None, "warm (the file is in the page cache after the writes)"
    try:
        drop_page_cache()
    except OSError as exc:
        return None, f"warm (--drop-caches not applied: {exc.strerror or exc})"
    return drop_page_cache, "cold (--drop-caches applied: page cache dropped before every timed read)"


# ---- local --------------------------------------------------------------------------------


def local_rows(folder: Path, data: bytes, repeat: int, before_read: Callable[[], None] | None) -> list[Row]:
    """Both sides overwrite an existing file of the same size in every timed round (the warm-up
    round creates them): expstore replaces it by rename, the baseline truncates and rewrites it.
    That is the common case of a rewritten result, and neither side gets a fresh-file advantage.
    Both reads read the same file, the one expstore wrote, so the on-disk layout is identical.
    """
    store = expstore.open_store(str(folder / "expstore"))
    store_path = folder / "expstore" / KEY
    raw_path = folder / "raw" / KEY
    raw_path.parent.mkdir()
    with store:
        writes = time_pair(lambda: store.write(KEY, data), lambda: raw_write(raw_path, data), repeat)
        reads = time_pair(
            lambda: store.read(KEY), lambda: np.fromfile(store_path, dtype=np.uint8), repeat, before_read
        )
    size = len(data)
    return [
        Row("local write", "open+write+fsync", LOCAL_TARGET, size, *writes),
        Row("local read", "np.fromfile", LOCAL_TARGET, size, *reads),
    ]


# ---- S3 -----------------------------------------------------------------------------------


@contextlib.contextmanager
def s3_server(name: str) -> Iterator[s3servers.S3Server]:
    """Start the server; stopping it also discards the objects written (SeaweedFS's data folder, moto's memory)."""
    server = S3_SERVERS[name]()
    try:
        yield server
    finally:
        server.stop()


def s3_rows(name: str, data: bytes, repeat: int) -> list[Row]:
    with s3_server(name) as server:
        client = server.boto3_client()
        client.create_bucket(Bucket=BUCKET)
        boto3_key = f"boto3/{KEY}"
        with expstore.open_store(f"s3://{BUCKET}/expstore", **server.storage_options) as store:
            writes = time_pair(
                lambda: store.write(KEY, data),
                lambda: client.put_object(Bucket=BUCKET, Key=boto3_key, Body=data),
                repeat,
            )
            reads = time_pair(
                lambda: store.read(KEY),
                lambda: client.get_object(Bucket=BUCKET, Key=boto3_key)["Body"].read(),
                repeat,
            )
            if store.read(KEY) != data:
                raise RuntimeError(f"{name}: expstore read back different bytes")
    size = len(data)
    return [
        Row(f"s3 write ({name})", "boto3 put_object", S3_TARGET, size, *writes),
        Row(f"s3 read ({name})", "boto3 get_object+read", S3_TARGET, size, *reads),
    ]


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__.split("\n\n")[0], size_help="value size in MiB (default 256)")
    parser.add_argument(
        "--s3",
        choices=["seaweedfs", "moto", "both", "none"],
        default="seaweedfs",
        help="S3 server(s) to start on 127.0.0.1 and measure (default seaweedfs)",
    )
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache before each local read (root)")
    return parse_bench_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers = {"both": ["seaweedfs", "moto"], "none": []}.get(args.s3, [args.s3])
    data = np.random.default_rng(0).integers(0, 256, args.size_mib * MiB, dtype=np.uint8).tobytes()
    before_read, cache = cache_mode(args.drop_caches)

    with scratch_folder(args.dir, "store-bench-") as folder:
        rows = local_rows(folder, data, args.repeat, before_read)
    for name in servers:
        rows += s3_rows(name, data, args.repeat)

    command = shlex.join(sys.orig_argv)
    notes = [
        f"{args.size_mib} MiB of random bytes; median of {args.repeat} repeats, best in parentheses;"
        " ratio = expstore time / baseline time; ok? judges the median ratio",
        f"local read cache: {cache}",
    ]
    if "moto" in servers:
        notes.append("moto runs in this process (ThreadedMotoServer): server and client share the GIL")
    print_report(
        rows, notes, machine(PACKAGES), command, args.json, size_mib=args.size_mib, repeat=args.repeat, local_read_cache=cache
    )
    return 0


if __name__ == "__main__":
    run(main, "interrupted: local files removed, S3 servers stopped")
