"""Hugging Face transformers: `ExpstoreCallback` logs a `Trainer` run through `ExperimentLogger` and
mirrors each `checkpoint-<step>/` folder the Trainer saves to any store URL; `restore_checkpoint`
brings a mirrored folder back for `trainer.train(resume_from_checkpoint=...)`.

Importing this module imports transformers (the callback subclasses `TrainerCallback`);
`import expstore` and `import expstore.integrations` do not.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import CorruptData, KeyNotFound, PreconditionFailed, StoreError
from ..experiment_logger import ExperimentLogger, create_experiment_logger
from ..format.checksum import array_crc32c
from ..store import Store, open_store
from ..store.keys import validate_experiment_name
from ..store.locate import join_url

__all__ = ["INDEX_KEY", "CheckpointMirror", "ExpstoreCallback", "restore_checkpoint"]

INDEX_KEY = "expstore_hf_mirror.json"
INDEX_FORMAT = "expstore-hf-checkpoints/1"
_CHECKPOINT_DIR = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def _folder(step: int) -> str:
    """The name Trainer gives the checkpoint folder of `step`, also its key prefix at the mirror."""
    return f"{PREFIX_CHECKPOINT_DIR}-{step}"


def _open(location: Any, what: str, storage_options: dict[str, Any], *, writable: bool) -> Store:
    """Open `location`; with `writable`, prove it takes writes (one small probe value, deleted again) so a
    bad or read-only URL fails when the callback is built, not hours into training. Errors name `what`."""
    try:
        store = open_store(location, **({} if isinstance(location, Store) else storage_options))
    except StoreError as exc:
        raise type(exc)(f"{what}={location!r}: {exc.message}", url=exc.url, key=exc.key) from exc
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{what}={location!r}: {exc}") from exc
    if not writable:
        return store
    probe = f"expstore-probe-{uuid.uuid4().hex}"
    try:
        store.write(probe, b"")
        store.delete(probe)
    except StoreError as exc:
        if store is not location:
            store.close()
        raise StoreError(f"{what}={location!r} is not writable: {exc.message}", url=store.url, key=probe) from exc
    return store


@contextmanager
def _mapped(path: Path) -> Iterator[memoryview]:
    """The bytes of the file at `path`, memory-mapped read-only (an empty file: an empty view)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            yield memoryview(b"")
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                yield view
            finally:
                view.release()


def _crc32c(data: memoryview | bytes) -> int:
    """crc32c of a buffer, the checksum the mirror index keeps per file."""
    return array_crc32c(np.frombuffer(data, dtype=np.uint8))


def _local_files(folder: Path) -> list[str]:
    """Every file below `folder` as a `/`-separated relative path, sorted."""
    found = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            found.append((Path(root) / name).relative_to(folder).as_posix())
    return sorted(found)


class CheckpointMirror:
    """Checkpoint folders copied to a store: `checkpoint-<step>/<file>` objects, each one atomic write,
    and the index `expstore_hf_mirror.json` (steps, each file's size and crc32c), written last.
    The mirror owns the `checkpoint-<n>/` keys at its URL: those the index does not name are deleted."""

    def __init__(self, url: Any, *, writable: bool = True, **storage_options: Any):
        self.store = _open(url, "checkpoint_url", storage_options, writable=writable)
        self._owns_store = self.store is not url
        self._version: str | None = None

    def read_index(self) -> dict[int, dict[str, Any]]:
        """step -> {"folder", "time", "files": {path: {"size", "crc32c"}}} of every mirrored checkpoint."""
        try:  # the token before the bytes: a change in between then fails the commit instead of being undone
            self._version = self.store.version(INDEX_KEY) if self.store.supports_conditional_writes else None
            raw = self.store.read(INDEX_KEY)
        except KeyNotFound:
            self._version = None
            return {}
        try:
            index = json.loads(raw)
            if index.get("format") != INDEX_FORMAT:
                raise ValueError(f"format {index.get('format')!r}, expected {INDEX_FORMAT!r}")
            return {int(entry["step"]): entry for entry in index["steps"]}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptData(f"the mirror index does not parse: {exc}", url=self.store.url, key=INDEX_KEY) from exc

    def steps(self) -> list[int]:
        """The mirrored steps, oldest first."""
        return sorted(self.read_index())

    def mirror(self, folder: str | os.PathLike[str], step: int, keep: set[int] | None = None) -> dict[str, Any]:
        """Copy the checkpoint folder of `step` (files whose size and crc32c the index already holds
        are not sent again), commit the index, then delete the mirrored steps not in `keep` (None: keep all)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise TypeError(f"step must be an int >= 0 (the global step of the checkpoint), got {step!r}")
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"checkpoint folder {str(folder)!r} of step {step} does not exist")
        index = self.read_index()
        before = index.get(step, {}).get("files", {})
        prefix = _folder(step) + "/"
        files: dict[str, dict[str, int]] = {}
        uploaded, sent_bytes = [], 0
        for rel in _local_files(folder):
            with _mapped(folder / rel) as data:
                entry = {"size": len(data), "crc32c": _crc32c(data)}
                if before.get(rel) != entry or not self._holds(prefix + rel, entry["size"]):
                    self.store.write(prefix + rel, data)
                    uploaded.append(rel)
                    sent_bytes += entry["size"]
            files[rel] = entry
        index[step] = {"step": step, "folder": _folder(step), "time": time.time(), "files": files}
        dropped = sorted(s for s in index if keep is not None and s not in keep and s != step)
        for gone in dropped:
            del index[gone]
        self._commit(index)
        for key in self._unindexed(index):
            try:
                self.store.delete(key)
            except KeyNotFound:
                pass  # already gone: a re-run after a crash between commit and delete
        return {"step": step, "url": join_url(self.store.url, _folder(step)), "files": len(files),
                "uploaded": uploaded, "bytes_uploaded": sent_bytes, "deleted_steps": dropped}

    def _unindexed(self, index: dict[int, dict[str, Any]]) -> list[str]:
        """Keys of checkpoint folders that the index does not name: rotated steps, files a re-saved step
        lost, and what a crash between a commit and its deletions left behind."""
        stale = []
        for key in self.store.list(PREFIX_CHECKPOINT_DIR + "-"):
            folder, _, rel = key.partition("/")
            match = _CHECKPOINT_DIR.match(folder)
            if match and rel not in index.get(int(match.group(1)), {}).get("files", {}):
                stale.append(key)
        return stale

    def _holds(self, key: str, size: int) -> bool:
        """Whether the store has a value of `size` bytes at `key` (the index may outlive a deleted object)."""
        try:
            return self.store.size(key) == size
        except KeyNotFound:
            return False

    def _commit(self, index: dict[int, dict[str, Any]]) -> None:
        """Replace the index, by compare-and-swap where the store can, so two writers never undo each other."""
        body = json.dumps({"format": INDEX_FORMAT, "steps": [index[s] for s in sorted(index)]}, indent=1).encode()
        try:
            if not self.store.supports_conditional_writes:
                self.store.write(INDEX_KEY, body)
            elif self._version is None:
                self._version = self.store.write(INDEX_KEY, body, if_absent=True)
            else:
                self._version = self.store.write(INDEX_KEY, body, if_match=self._version)
        except PreconditionFailed as exc:
            raise PreconditionFailed(
                "another writer changed the mirror index while this one mirrored; give each run its own checkpoint_url",
                url=self.store.url, key=INDEX_KEY,
            ) from exc

    def restore(self, step: int | None, local_dir: str | os.PathLike[str]) -> Path:
        """Write mirrored checkpoint `step` (None: the latest) to `local_dir/checkpoint-<step>/`, each
        file checked against the index's size and crc32c; returns that folder."""
        index = self.read_index()
        if not index:
            raise KeyNotFound("no mirrored checkpoint", url=self.store.url, key=INDEX_KEY)
        step = max(index) if step is None else step
        if step not in index:
            raise KeyNotFound(f"step {step} is not mirrored; mirrored steps: {sorted(index)}", url=self.store.url, key=INDEX_KEY)
        target = Path(local_dir) / _folder(step)
        if target.exists():
            raise FileExistsError(f"{str(target)!r} exists; restore into another local_dir or remove it first")
        partial = target.with_name(target.name + f".partial-{uuid.uuid4().hex[:8]}")
        try:
            for rel, entry in index[step]["files"].items():
                key = f"{_folder(step)}/{rel}"
                data = self.store.read(key)
                if len(data) != entry["size"] or _crc32c(data) != entry["crc32c"]:
                    raise CorruptData(f"mirrored file {rel!r} of step {step} does not match its size and crc32c in the index",
                                      url=self.store.url, key=key)
                path = partial / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            partial.mkdir(parents=True, exist_ok=True)  # a checkpoint without files still restores as a folder
            os.replace(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return target

    def close(self) -> None:
        """Close the store if this mirror opened it."""
        if self._owns_store:
            self.store.close()


def restore_checkpoint(checkpoint_url: Any, local_dir: str | os.PathLike[str], step: int | None = None,
                       **storage_options: Any) -> Path:
    """Copy a mirrored checkpoint (the latest when `step` is None) back to `local_dir/checkpoint-<step>/`,
    checksums checked, for `trainer.train(resume_from_checkpoint=<returned path>)`."""
    mirror = CheckpointMirror(checkpoint_url, writable=False, **storage_options)
    try:
        return mirror.restore(step, local_dir)
    finally:
        mirror.close()


def _scalar(value: Any) -> float | int | None:
    """`value` as a metric number (a one-element tensor or array gives its item), else None."""
    if isinstance(value, (int, float, np.number)):
        return value
    if getattr(value, "numel", None) is not None and value.numel() == 1:
        return value.item()
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.item()
    return None


class ExpstoreCallback(TrainerCallback):
    """A `Trainer` callback: the run's arguments, model config and `on_log` metrics go to an expstore
    `ExperimentLogger` at `output_dir`; with `checkpoint_url`, each saved checkpoint folder is mirrored there."""

    def __init__(self, output_dir: Any = None, experiment_name: str = "hf_trainer", *, checkpoint_url: Any = None,
                 log_to_console: bool = False, **storage_options: Any):
        if output_dir is None and checkpoint_url is None:
            raise ValueError("ExpstoreCallback needs output_dir (where to log), checkpoint_url (where to mirror checkpoints), or both")
        self.experiment_name = validate_experiment_name(experiment_name)
        self.output_dir = output_dir
        self.log_to_console = log_to_console
        self.storage_options = storage_options
        if output_dir is not None:
            probe = _open(output_dir, "output_dir", storage_options, writable=True)
            if probe is not output_dir:
                probe.close()
        self.mirror = CheckpointMirror(checkpoint_url, **storage_options) if checkpoint_url is not None else None
        self.logger: ExperimentLogger | None = None
        self._skipped: set[str] = set()
        self._training = False  # between on_train_begin and on_train_end

    def _start(self, args: Any, model: Any) -> None:
        """Start the run's logger and record the training arguments and the model's config."""
        options = {} if isinstance(self.output_dir, Store) else self.storage_options
        self.logger = create_experiment_logger(self.experiment_name, self.output_dir, verbose=self.log_to_console, **options)
        config: dict[str, Any] = {"training_args": args.to_dict()}
        if getattr(model, "config", None) is not None:
            config["model_config"] = model.config.to_dict()
            config["model"] = {"class": type(model).__name__, "num_parameters": int(sum(p.numel() for p in model.parameters()))}
        self.logger.log_config(config)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """A new run: a logger (a new session when the callback trained before) and its config. A run
        still open from a `train()` that never reached `on_train_end` (it raised) is finalized as failed."""
        if self._training:
            self.finalize("failed")
        self._training = True
        if self.output_dir is not None and state.is_world_process_zero and self.logger is None:
            self._start(args, model)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, model: Any = None,
               **kwargs: Any) -> None:
        """Log the numeric values of `logs` as metrics at the global step; others are skipped once, with a warning."""
        if self.output_dir is None or not state.is_world_process_zero:
            return
        if self.logger is None:
            self._start(args, model)  # evaluate() or predict() without train()
        metrics = {}
        for key, value in (logs or {}).items():
            number = _scalar(value)
            if number is not None:
                metrics[key] = number
            elif key not in self._skipped:
                self._skipped.add(key)
                self.logger.warning("log value %r of type %s is not a number; not logged as a metric", key, type(value).__name__)
        self.logger.log_metrics(metrics, step=state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Mirror the checkpoint just saved, and delete at the URL the folders Trainer rotated away locally."""
        if self.mirror is None or not state.is_world_process_zero:
            return
        local = Path(args.output_dir)
        keep = {int(m.group(1)) for p in local.iterdir() if p.is_dir() and (m := _CHECKPOINT_DIR.match(p.name))}
        info = self.mirror.mirror(local / _folder(state.global_step), state.global_step, keep=keep)
        if self.logger is not None:
            self.logger.log_checkpoint(info)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Record where training stopped and finalize the run as completed."""
        self._training = False
        if self.logger is not None:
            self.logger.log_result({"global_step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch,
                                    "stopped_early": bool(state.max_steps and state.global_step < state.max_steps)})
            self.finalize("completed")

    def finalize(self, final_status: str = "completed") -> dict[str, Any] | None:
        """Finalize the run's logger with `final_status` (call it with "failed" when `trainer.train()` raised);
        None when no run was logged."""
        logger, self.logger = self.logger, None
        return logger.finalize(final_status) if logger is not None else None
