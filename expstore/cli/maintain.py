"""`expstore verify`, `gc` and `cp`: check every checkpoint, remove what no index names, copy runs between stores."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..checkpointing import CheckpointManager, backup_checkpoint, verify_object
from ..checkpointing.names import CKPT_RE, INDEX_RE, is_checkpoint_part
from ..errors import KeyNotFound, StoreError
from ..store.base import Store
from ..store.registry import split_url
from .common import UsageError, human_size, join_url, open_url, print_json, progress_bar, storage_options
from .layout import CheckpointDir, checkpoint_target, discover, list_keys, stored_size

__all__ = ["check_history", "cmd_cp", "cmd_gc", "cmd_verify", "histories", "register"]

# What reading a damaged checkpoint can raise besides StoreError (malformed attributes in HDF5/Zarr).
_DAMAGE = (StoreError, ValueError, KeyError, TypeError, OSError)


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `verify`, `gc` and `cp`."""
    p = sub.add_parser("verify", parents=parents,
                       help="check every checkpoint's checksums and the index (exit 1 naming bad files)")
    p.add_argument("url", metavar="URL", help="a root of runs, one run, a checkpoint directory, or one checkpoint")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("gc", parents=parents, help="delete checkpoint objects no index names (left by crashes)")
    p.add_argument("url", metavar="URL", help="a root of runs, one run, or a checkpoint directory")
    p.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    p.set_defaults(func=cmd_gc)
    p = sub.add_parser("cp", parents=parents, help="copy runs or checkpoint histories between stores (resumable, verified)")
    p.add_argument("src", metavar="SRC", help="a root of runs, one run, a checkpoint directory, or one checkpoint")
    p.add_argument("dst", metavar="DST", help="where SRC's contents go (a checkpoint directory when SRC is one checkpoint)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dst-endpoint-url", metavar="URL",
                   help="the S3 endpoint of DST when it is not SRC's (default: --endpoint-url for both)")
    p.set_defaults(func=cmd_cp)


def histories(args: argparse.Namespace, url: str) -> list[CheckpointDir]:
    """Every checkpoint history under `url`; `UsageError` when there is none."""
    found = [c for run in discover(args, url) for c in run.checkpoints]
    if not found:
        raise UsageError(f"no checkpoint index (<name>_index.json) found at {url!r}")
    return found


def check_history(args: argparse.Namespace, ckpt: CheckpointDir, only: set[int] | None = None) -> list[dict[str, Any]]:
    """Verify the index and every checkpoint it names (or only iterations `only`); one result per file."""
    with open_url(args, ckpt.url) as store:
        manager = CheckpointManager(store, ckpt.experiment, keep_last_n=None)
        try:
            entries = manager.list_checkpoints()
        except _DAMAGE as exc:
            return [_result(join_url(ckpt.url, manager.index_key), exc)]
        return [_check_object(store, e["key"], e["path"]) for e in entries if only is None or e["iteration"] in only]


def _check_object(store: Store, key: str, ref: str) -> dict[str, Any]:
    try:
        verify_object(store, key)
    except _DAMAGE as exc:
        return _result(ref, exc)
    return _result(ref, None)


def _result(ref: str, exc: BaseException | None) -> dict[str, Any]:
    error = None if exc is None else " ".join(f"{type(exc).__name__}: {exc}".split())
    return {"ref": ref, "ok": exc is None, "error": error}


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every checkpoint and index under the URL reads back with good checksums, else 1."""
    target = checkpoint_target(args.url)
    if target:
        with open_url(args, target[0]) as store:
            results = [_check_object(store, target[1], args.url)]
    else:
        results = [r for ckpt in histories(args, args.url) for r in check_history(args, ckpt)]
    bad = [r for r in results if not r["ok"]]
    if args.json:
        print_json({"url": args.url, "ok": not bad, "checked": len(results), "bad": bad, "results": results})
    else:
        for r in results:
            print(f"ok   {r['ref']}" if r["ok"] else f"BAD  {r['ref']}: {r['error']}")
        print(f"{len(results)} file(s) checked, {len(bad)} bad")
    return 1 if bad else 0


def cmd_gc(args: argparse.Namespace) -> int:
    """Delete (or list, with --dry-run) the checkpoint objects that no index names, and the temp
    files of writers killed mid-write: exactly what `CheckpointManager.gc` removes."""
    failed = 0
    seen: set[str] = set()  # every experiment's gc sees the temp files of its whole folder: name each once
    for ckpt in histories(args, args.url):
        with open_url(args, ckpt.url) as store:
            manager = CheckpointManager(store, ckpt.experiment, keep_last_n=None)
            try:
                manager.list_checkpoints()  # an unreadable index: skip this experiment, delete nothing
            except StoreError as exc:
                print(f"skipped {ckpt.url}: the index of {ckpt.experiment!r} is unreadable, nothing deleted ({exc})")
                failed += 1
                continue
            orphans = manager.gc(dry_run=args.dry_run)
        for url in (join_url(ckpt.url, key) for key in orphans):
            if url not in seen:
                seen.add(url)
                print(f"{'would delete' if args.dry_run else 'deleted'}  {url}")
    print(f"{len(seen)} unindexed checkpoint object(s) {'to delete' if args.dry_run else 'deleted'}")
    return 1 if failed else 0


# ---- cp ------------------------------------------------------------------------------------------


def cmd_cp(args: argparse.Namespace) -> int:
    """Copy SRC to DST: checkpoints through their index (skipping those already there), other files byte for byte."""
    _refuse_copy_into_itself(args)
    if checkpoint_target(args.dst):
        raise UsageError(f"DST {args.dst!r} names a checkpoint; give the directory to copy into")
    target = checkpoint_target(args.src)
    if target:
        plan = [(CheckpointDir(target[0], target[2], ""), args.dst, {int(CKPT_RE.match(target[1])["it"])})]  # type: ignore[index]
        files: list[str] = []
    else:
        keys = list_keys(args, args.src)
        found = _histories_in(args, args.src, keys)
        plan = [(c, join_url(args.dst, c.folder), None) for c in found]
        files = [k for k in keys if not _is_checkpoint_file(k)]
    dst_args = argparse.Namespace(**{**vars(args), "endpoint_url": args.dst_endpoint_url or args.endpoint_url})
    copied = _copy_histories(args, dst_args, plan)
    nfiles, skipped, nbytes = _copy_files(args, dst_args, files) if files else (0, 0, 0)
    print(f"copied {copied['copied']} checkpoint(s) ({copied['skipped']} already there) and {nfiles} file(s) "
          f"({skipped} already there), {human_size(copied['bytes'] + nbytes)}, {args.src} -> {args.dst}")
    results = [r for ckpt, dst, only in plan
               for r in check_history(dst_args, CheckpointDir(dst, ckpt.experiment, ckpt.folder), copied["iterations"][dst])]
    bad = [r for r in results if not r["ok"]]
    for r in bad:
        print(f"BAD  {r['ref']}: {r['error']}")
    print(f"verified {len(results)} checkpoint(s) at {args.dst}: {'ok' if not bad else f'{len(bad)} bad'}")
    return 1 if bad else 0


def _refuse_copy_into_itself(args: argparse.Namespace) -> None:
    """`UsageError` naming both when DST is SRC or lies inside it."""
    (src_kind, src), (dst_kind, dst) = _place(args.src), _place(args.dst)
    if src_kind != dst_kind:
        return
    if dst == src:
        raise UsageError(f"SRC {args.src!r} and DST {args.dst!r} are the same place")
    if dst.startswith(src.rstrip("/") + "/"):
        raise UsageError(f"DST {args.dst!r} lies inside SRC {args.src!r}: the copy would copy itself")


def _place(url: str) -> tuple[str, str]:
    """(kind, location) of a URL, comparable across spellings: local paths (and files holding
    HDF5 / Zarr) made absolute, `zarr+s3://` counted as `s3://`."""
    scheme, location = split_url(url)
    kind = scheme.rpartition("+")[2]
    if kind in ("file", "h5", "zarr"):
        return "file", os.path.abspath(location)
    return kind, location.rstrip("/")


def _histories_in(args: argparse.Namespace, url: str, keys: list[str]) -> list[CheckpointDir]:
    """The checkpoint histories among `keys` (none is fine for cp: plain files are copied too)."""
    return [c for run in discover(args, url, keys) for c in run.checkpoints]


def _is_checkpoint_file(key: str) -> bool:
    return is_checkpoint_part(key) or bool(INDEX_RE.match(key.rpartition("/")[2]))


def _copy_histories(
    args: argparse.Namespace, dst_args: argparse.Namespace, plan: list[tuple[CheckpointDir, str, set[int] | None]]
) -> dict[str, Any]:
    """Copy each planned history oldest first with `backup_checkpoint`; skip checkpoints DST already indexes.
    `args` give SRC's storage options, `dst_args` DST's."""
    stats: dict[str, Any] = {"copied": 0, "skipped": 0, "bytes": 0, "iterations": {}}
    for ckpt, dst_url, only in plan:
        with open_url(args, ckpt.url) as src, open_url(dst_args, dst_url) as dst:
            entries = [e for e in CheckpointManager(src, ckpt.experiment, keep_last_n=None).list_checkpoints()
                       if only is None or e["iteration"] in only]
            if only and not entries:
                raise KeyNotFound("the index does not name this checkpoint", url=ckpt.url, key=ckpt.experiment)
            present = CheckpointManager(dst, ckpt.experiment, keep_last_n=None).list_checkpoints()
            have = {e["iteration"]: e["key"] for e in present}
            sizes = {e["key"]: stored_size(src, e["key"]) or 0 for e in entries}
            bar = progress_bar(sum(sizes.values()), desc=f"{ckpt.experiment} checkpoints", unit="B", enabled=not args.no_progress)
            try:
                for e in entries:
                    if have.get(e["iteration"]) == e["key"] and _same_size(src, dst, e["key"]):
                        stats["skipped"] += 1
                    else:
                        backup_checkpoint(e["path"], dst, source_options=storage_options(args, ckpt.url))
                        stats["copied"] += 1
                        stats["bytes"] += sizes[e["key"]]
                    bar.update(sizes[e["key"]])
            finally:
                bar.close()
            stats["iterations"][dst_url] = {e["iteration"] for e in entries}
    return stats


def _copy_files(args: argparse.Namespace, dst_args: argparse.Namespace, keys: list[str]) -> tuple[int, int, int]:
    """Copy plain files (logs, exports) byte for byte, skipping those DST holds with the same size."""
    copied = skipped = nbytes = 0
    with open_url(args, args.src) as src, open_url(dst_args, args.dst) as dst:
        sizes = {k: stored_size(src, k) or 0 for k in keys}
        bar = progress_bar(sum(sizes.values()), desc="files", unit="B", enabled=not args.no_progress)
        try:
            for key in keys:
                if _same_size(src, dst, key):
                    skipped += 1
                else:
                    data = src.read(key)
                    dst.write(key, data)
                    copied += 1
                    nbytes += len(data)
                bar.update(sizes[key])
        finally:
            bar.close()
    return copied, skipped, nbytes


def _same_size(src: Store, dst: Store, key: str) -> bool:
    """True when DST has `key` with the size it has in SRC (array-native stores: when DST has it at all)."""
    try:
        return dst.exists(key) and (dst.supports_arrays or src.supports_arrays or dst.size(key) == src.size(key))
    except StoreError:
        return False
