"""`expstore ls` and `expstore show`: the runs under a URL, what a run left behind, and what one checkpoint holds."""

from __future__ import annotations

import argparse
import functools
from typing import Any

import numpy as np

from ..checkpointing import CheckpointManager, object_manifest
from ..errors import StoreError
from ..experiment_logger.layout import SEGMENTS_SUFFIX
from ..experiment_logger.summaries import STALE, logged_runs
from ..format.torch_tensors import SAFETENSORS_DTYPES, is_torch_object
from ..format.tree import dtype_from_description, unflatten, walk_skeleton
from .common import (
    UsageError,
    age_seconds,
    fmt_number,
    human_age,
    human_size,
    join_url,
    open_url,
    print_json,
    print_output,
    short,
    table,
)
from .layout import CheckpointDir, Run, checkpoint_target, discover, list_keys, stored_size

__all__ = ["cmd_ls", "cmd_show", "describe_checkpoint", "register"]


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Add `ls` and `show` (and `logs`, from its own module)."""
    from . import logs

    p = sub.add_parser("ls", parents=parents, help="list runs: one line each (status, metrics) from the run catalog, "
                       "or for one run its checkpoints (iteration, size, age, tags), logs, exports")
    p.add_argument("url", metavar="URL", help="the demo's --url (a root of runs), one run, or a checkpoint directory")
    p.add_argument("-l", "--long", action="store_true",
                   help="details of every run even when the URL holds several (reads every index, sizes every file)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("show", parents=parents, help="a checkpoint's manifest: leaves with dtype/shape, metadata, checksums")
    p.add_argument("url", metavar="URL_OR_CKPT", help="one checkpoint, or a run/root (shows each experiment's latest)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)
    logs.register(sub, parents)


# ---- ls ------------------------------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    """List the runs under the URL: one line each from the catalog when there are several, else the details."""
    keys = None if checkpoint_target(args.url) else list_keys(args, args.url)
    found = discover(args, args.url, keys)
    if len(found) > 1 and not args.long:
        return _ls_catalog(args, found, keys or [])
    runs = [_describe_run(args, run) for run in found]
    return print_output(args.json, {"url": args.url, "runs": runs}, runs, _print_run)


def _print_run(run: dict[str, Any]) -> None:
    print(f"run {run['name']}  {run['url']}")
    for history in run["checkpoints"]:
        _print_history(history)
    for kind in ("logs", "results", "other"):
        if run[kind]:
            print(f"  {kind}")
            print(table([[f["key"], human_size(f["size"]), f.get("note", "")] for f in _collapse(run[kind])], indent="    "))


def _ls_catalog(args: argparse.Namespace, runs: list[Run], keys: list[str]) -> int:
    """One line per run: its experiments' summaries (one GET each), and runs without any from their keys alone."""
    with open_url(args, args.url) as store:
        catalog = logged_runs(store, keys)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for entry in catalog:
        by_run.setdefault(join_url(args.url, entry["run_folder"]), []).append(entry)
    rows = [_catalog_row(run, entry) for run in runs for entry in by_run.get(run.url) or [None]]
    if args.json:
        print_json({"url": args.url, "runs": rows})
        return 0
    print(table([[r["name"], _status_text(r), r["ranks"] or "-",
                  _ago(r["start_time"]), "-" if r["duration_seconds"] is None else f"{r['duration_seconds']:.1f}s",
                  " ".join(f"{k}={fmt_number(v)}" for k, v in list(r["final_metrics"].items())[:4]), r["url"]]
                 for r in rows], ["run", "status", "ranks", "started", "duration", "metrics", "url"]))
    print(f"{len(runs)} runs; details of one: expstore ls <its url>, of all: expstore ls --long {args.url}")
    return 0


def _status_text(row: dict[str, Any]) -> str:
    """The status column; a stale run says when it was last heard of."""
    if row["status"] is None:
        return "-" if row["summary"] is None else "no summary"
    if row["status"] == STALE:
        return f"stale (last heartbeat {_ago(row['heartbeat_time'])})"
    return str(row["status"])


def _ago(timestamp: str | None) -> str:
    seconds = age_seconds(timestamp)
    return "-" if seconds is None else f"{human_age(seconds)} ago"


def _catalog_row(run: Run, entry: dict[str, Any] | None) -> dict[str, Any]:
    """A run's line: `entry` is one of its logged experiments, None for a run without logs (checkpoints, exports)."""
    base = {"name": run.name, "url": run.url, "checkpoints": sorted({c.experiment for c in run.checkpoints}),
            "summary": None, "status": None, "start_time": None, "end_time": None, "duration_seconds": None,
            "ranks": None, "final_metrics": {}, "heartbeat_time": None}
    if entry is None:
        return base
    name = run.name if entry["name"] == run.name else f"{run.name}/{entry['name']}"
    keys = ("summary", "status", "start_time", "end_time", "duration_seconds", "ranks", "final_metrics", "heartbeat_time")
    return {**base, "name": name, "experiment": entry["name"], **{k: entry[k] for k in keys}}


def _print_history(history: dict[str, Any]) -> None:
    entries = history["entries"]
    print(f"  checkpoints  {history['experiment']}: {len(entries)} in {history['url']}")
    if history.get("error"):
        print(f"    index unreadable: {history['error']}")
    rows = [[e["iteration"], human_size(e["size"]), human_age(e["age_s"]), ",".join(e["tags"]) or "-",
             " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={short(v, 20)}" for k, v in e["metadata"].items())]
            for e in entries]
    if rows:
        print(table(rows, ["iteration", "size", "age", "tags", "metadata"], indent="    "))
    if history["orphans"]:
        print(f"    + {len(history['orphans'])} object(s) the index does not name (expstore gc removes them)")


def _describe_run(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    with open_url(args, run.url) as store:
        files = {kind: [{"key": k, "size": stored_size(store, k)} for k in getattr(run, kind)]
                 for kind in ("logs", "results", "other")}
    return {"name": run.name, "url": run.url, "checkpoints": [_describe_history(args, c) for c in run.checkpoints], **files}


def _describe_history(args: argparse.Namespace, ckpt: CheckpointDir) -> dict[str, Any]:
    """The index entries of one experiment, with object sizes and ages; an unreadable index is reported, not raised."""
    doc: dict[str, Any] = {"experiment": ckpt.experiment, "url": ckpt.url, "entries": [], "orphans": [], "error": None}
    with open_url(args, ckpt.url) as store:
        manager = CheckpointManager(store, ckpt.experiment, keep_last_n=None)
        try:
            listed = manager.list_checkpoints()
        except StoreError as exc:
            doc["error"] = str(exc)
            return doc
        for c in listed:
            doc["entries"].append({"iteration": c["iteration"], "ref": c["path"], "size": stored_size(store, c["key"]),
                                   "timestamp": c["timestamp"], "age_s": age_seconds(c["timestamp"]),
                                   "tags": c["tags"], "metadata": c["metadata"]})
        doc["orphans"] = manager.gc(dry_run=True)  # exactly what `expstore gc` would delete
        return doc


def _collapse(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per logger segment folder (`x.segments/`) instead of one per segment."""
    out: list[dict[str, Any]] = []
    groups: dict[str, dict[str, Any]] = {}
    for f in files:
        head, sep, _ = f["key"].partition(f"{SEGMENTS_SUFFIX}/")
        if not sep:
            out.append(f)
            continue
        group = groups.get(head)
        if group is None:
            group = groups[head] = {"key": f"{head}{SEGMENTS_SUFFIX}/", "size": 0, "count": 0}
            out.append(group)
        group["size"] += f["size"] or 0
        group["count"] += 1
        group["note"] = f"{group['count']} segment(s): a running or crashed run"
    return out


# ---- show ----------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    """Print the manifest of one checkpoint, or of the latest checkpoint of each experiment under the URL."""
    docs = [describe_checkpoint(args, url, key) for url, key in _targets(args)]
    return print_output(args.json, docs[0] if checkpoint_target(args.url) else docs, docs, _print_checkpoint)


def _targets(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(directory URL, key) of what `show` should describe."""
    target = checkpoint_target(args.url)
    if target:
        return [target[:2]]
    found = []
    for run in discover(args, args.url):
        for ckpt in run.checkpoints:
            with open_url(args, ckpt.url) as store:
                listed = CheckpointManager(store, ckpt.experiment, keep_last_n=None).list_checkpoints()
            if listed:
                found.append((ckpt.url, listed[-1]["key"]))
    if not found:
        raise UsageError(f"no checkpoint found at {args.url!r}")
    return found


def describe_checkpoint(args: argparse.Namespace, url: str, key: str) -> dict[str, Any]:
    """The manifest of one checkpoint as a plain dict: info, metadata, and one entry per leaf of the state."""
    with open_url(args, url) as store:
        size = stored_size(store, key)
        if store.supports_arrays:
            tree = store.read_tree(key, map_location="cpu")
            info, leaves = tree, _tree_leaves(tree.get("state"), "")
        else:
            manifest = object_manifest(store, key)
            info, leaves = manifest.get("extra") or {}, _skeleton_leaves(manifest["tree"], manifest["arrays"])
    return {"ref": join_url(url, key), "experiment": info.get("experiment"), "iteration": info.get("iteration"),
            "timestamp": info.get("timestamp"), "tags": list(info.get("tags") or []), "size": size,
            "metadata": info.get("metadata") or {}, "leaves": leaves}


def _print_checkpoint(doc: dict[str, Any]) -> None:
    print(f"checkpoint  {doc['ref']}")
    print(f"  experiment {doc['experiment']}   iteration {doc['iteration']}   saved {doc['timestamp']} "
          f"({human_age(age_seconds(doc['timestamp']))} ago)   size {human_size(doc['size'])}   "
          f"tags {','.join(doc['tags']) or '-'}")
    for k, v in doc["metadata"].items():
        print(f"  metadata   {k} = {fmt_number(v)}")
    rows = []
    for leaf in doc["leaves"]:
        if leaf["kind"] in ("array", "pickle", "tensor", "ml_array"):
            crc = "-" if leaf.get("crc32c") is None else f"crc32c {leaf['crc32c']:08x}"
            rows.append([leaf["path"] or "(root)", leaf["kind"], leaf["dtype"], tuple(leaf["shape"]), crc])
        else:
            rows.append([leaf["path"] or "(root)", leaf["kind"], short(leaf.get("value"), 40), "", ""])
    print("  state")
    print(table(rows, ["path", "kind", "dtype / value", "shape", "checksum"], indent="    "))


def _skeleton_leaves(skeleton: dict[str, Any], arrays: dict[str, Any]) -> list[dict[str, Any]]:
    """Leaves of a codec skeleton (no array data is read)."""
    leaves = []
    for node, keys in walk_skeleton(skeleton):
        t, path = node["t"], functools.reduce(_child, keys, "")
        if t in ("dict", "list", "tuple"):
            continue
        if t in ("array", "pickle"):
            a = arrays.get(node["path"], {})
            leaves.append({"path": path, "kind": t, "dtype": _dtype_name(a.get("dtype")), "shape": a.get("shape", []),
                           "crc32c": a.get("crc32c"), "encoding": a.get("encoding")})
        elif t in ("tensor", "ml_array"):
            a = arrays.get(node.get("storage", node["path"]), {})
            shape = node["view"]["shape"] if "view" in node else a.get("shape", [])
            if t == "tensor" and getattr(SAFETENSORS_DTYPES.get(node.get("dtype")), "complex_pairs", False):
                shape = shape[:-1]  # the (real, imag) axis of the stored pairs
            leaves.append({"path": path, "kind": t, "dtype": str(node.get("dtype")), "shape": shape,
                           "crc32c": a.get("crc32c"), "encoding": a.get("encoding")})
        else:
            leaves.append({"path": path, "kind": t, "value": _skeleton_value(node)})
    return leaves


def _dtype_name(descr: Any) -> str:
    """'float64' for '<f8', '>int32' for '>i4'; structured descriptions as their text."""
    try:
        dtype = dtype_from_description(descr)
    except (TypeError, ValueError):
        return str(descr)
    return dtype.name if dtype.byteorder in "=|<" else f">{dtype.name}"


def _skeleton_value(node: dict[str, Any]) -> Any:
    """A plain leaf of a skeleton as a load decodes it; bytes as their length, big ints as hex text."""
    try:
        value = unflatten(node, {})
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return f"<undecodable {node['t']} node: {exc}>"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return hex(value)  # str() of an int over 4300 digits raises
    return value


def _tree_leaves(value: Any, path: str) -> list[dict[str, Any]]:
    """Leaves of a tree read from an array-native store (HDF5, Zarr): no stored checksums there."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _tree_leaves(v, _child(path, k))]
    if isinstance(value, (list, tuple)):
        return [leaf for i, v in enumerate(value) for leaf in _tree_leaves(v, _child(path, i))]
    if isinstance(value, np.ndarray):
        return [{"path": path, "kind": "array", "dtype": _dtype_name(value.dtype.str), "shape": list(value.shape),
                 "crc32c": None}]
    if is_torch_object(value) and hasattr(value, "untyped_storage"):
        return [{"path": path, "kind": "tensor", "dtype": str(value.dtype).removeprefix("torch."),
                 "shape": list(value.shape), "crc32c": None}]
    if isinstance(value, np.generic):
        return [{"path": path, "kind": "npscalar", "value": value.item()}]
    if isinstance(value, bytes):
        return [{"path": path, "kind": "bytes", "value": f"<{len(value)} bytes>"}]
    return [{"path": path, "kind": type(value).__name__.replace("NoneType", "none"), "value": value}]


def _child(path: str, name: Any) -> str:
    return f"{path}/{name}" if path else str(name)
