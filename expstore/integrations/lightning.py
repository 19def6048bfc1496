"""PyTorch Lightning on any expstore URL: `ExpstoreCheckpointIO` (a `CheckpointIO` plugin) and
`ExpstoreLogger` (a `Logger` that writes through `ExperimentLogger`).

`ModelCheckpoint` picks the paths (``<dirpath>/epoch=0-step=10.ckpt``, ``last.ckpt``) and the
plugin stores each as one expstore checkpoint at that key of the store the rest of the path
names: atomic, checksummed, no pickle. Importing this module imports Lightning and torch;
importing `expstore` or `expstore.integrations` imports neither.
"""

from __future__ import annotations

import os
import threading
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from ..experiment_logger import ExperimentLogger
from ..format.checkpoint import read_checkpoint, read_manifest, write_checkpoint
from ..store import Store, open_store
from ..store.locate import join_url, opened_store, split_url_at

__all__ = ["ExpstoreCheckpointIO", "ExpstoreLogger", "latest_checkpoint"]

FORMAT = "lightning"  # `extra["format"]` of the objects this plugin writes on bytes stores
CHECKPOINT_SUFFIX = ".ckpt"
# Lightning's `Trainer` statuses -> the statuses `expstore ls` / the catalog know
STATUSES = {"success": "completed", "failed": "failed", "finished": "interrupted"}


class _Stores:
    """The stores of the folders checkpoints go to, opened once per folder URL (saves may run on
    `AsyncCheckpointIO`'s thread while the trainer loads on its own)."""

    def __init__(self, storage_options: Mapping[str, Any]) -> None:
        self._options = dict(storage_options)
        self._open: dict[str, Store] = {}
        self._lock = threading.Lock()

    def locate(self, path: str | os.PathLike[str]) -> tuple[Store, str]:
        """(store, key) of a checkpoint path: the last path segment is the key."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"a checkpoint path must be a str or a path, not {type(path).__name__}")
        folder, key = split_url_at(path)
        with self._lock:
            store = self._open.get(folder)
            if store is None:
                store = self._open[folder] = open_store(folder, **self._options)
            return store, key

    def close(self) -> None:
        """Close every store opened so far (a later save opens them again)."""
        with self._lock:
            opened, self._open = list(self._open.values()), {}
        for store in opened:
            store.close()


class ExpstoreCheckpointIO(CheckpointIO):
    """Lightning's checkpoint IO through expstore stores: `Trainer(plugins=[ExpstoreCheckpointIO()])`.

    Any `ModelCheckpoint(dirpath=...)` URL works: a folder, ``s3://bucket/run/ckpt``, ``run.h5/ckpt``,
    ``run.zarr/ckpt``. `storage_options` go to `open_store` (``endpoint_url=``, ``key=``, ...).
    `allow_pickle=True` pickles values the format cannot hold (objects in ``hyper_parameters``) and
    lets loads unpickle them; it is not available on HDF5/Zarr, which keep real datasets.
    """

    def __init__(self, *, allow_pickle: bool = False, **storage_options: Any) -> None:
        if not isinstance(allow_pickle, bool):
            raise TypeError(f"allow_pickle must be True or False, got {allow_pickle!r}")
        self.allow_pickle = allow_pickle
        self.storage_options = dict(storage_options)
        self._stores = _Stores(storage_options)

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        """Write Lightning's checkpoint dict as one expstore checkpoint at `path` (one atomic store write)."""
        if storage_options is not None:
            raise TypeError(
                "Trainer.save_checkpoint(..., storage_options=...) is not taken per call by ExpstoreCheckpointIO: "
                "pass the store's options once, ExpstoreCheckpointIO(endpoint_url=..., ...)"
            )
        if not isinstance(checkpoint, dict):
            raise TypeError(f"checkpoint must be the dict Lightning builds, not {type(checkpoint).__name__}")
        store, key = self._stores.locate(path)
        if store.supports_arrays and self.allow_pickle:
            raise TypeError(
                f"ExpstoreCheckpointIO(allow_pickle=True) cannot write to the array-native store {store.url!r}: "
                "it keeps checkpoints as real datasets; use a folder or S3 URL for pickled values"
            )
        try:
            if store.supports_arrays:
                store.write_tree(key, checkpoint)
            else:
                write_checkpoint(store, key, checkpoint, extra=_extra(checkpoint), allow_pickle=self.allow_pickle,
                                 name="checkpoint")
        except TypeError as exc:  # a value the format cannot hold; nothing was written
            if self.allow_pickle:
                raise
            where = " on a folder or S3 URL (HDF5/Zarr hold no pickle)" if store.supports_arrays else ""
            raise TypeError(
                f"{exc} (saving {os.fspath(path)!r}). A Lightning checkpoint holds what the module, its callbacks and "
                "save_hyperparameters() put in it: keep those values plain (numbers, strings, lists, dicts, tensors), "
                "leave such a hyperparameter out with save_hyperparameters(ignore=[...]), "
                f"or opt in with ExpstoreCheckpointIO(allow_pickle=True){where}"
            ) from exc

    def load_checkpoint(self, path: Any, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        """Read the checkpoint at `path`; tensors go where `map_location` says (as `torch.load`; the
        default loads to CPU, as Lightning's own IO). `weights_only=True` refuses pickled values."""
        store, key = self._stores.locate(path)
        allow_pickle = self.allow_pickle and weights_only is not True
        if store.supports_arrays:
            return store.read_tree(key, map_location=map_location)
        tree, _ = read_checkpoint(store, key, allow_pickle=allow_pickle, map_location=map_location)
        return tree

    def remove_checkpoint(self, path: Any) -> None:
        """Delete the checkpoint at `path` through its store; a path that holds nothing is no error."""
        store, key = self._stores.locate(path)
        if store.exists(key):
            store.delete(key)

    def teardown(self) -> None:
        """Close the stores this plugin opened."""
        self._stores.close()


def _extra(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """What the manifest says of a Lightning checkpoint, readable without loading it (`latest_checkpoint`)."""
    extra: dict[str, Any] = {"format": FORMAT}
    for name in ("epoch", "global_step", "pytorch-lightning_version"):
        if isinstance(checkpoint.get(name), (int, str)) and not isinstance(checkpoint.get(name), bool):
            extra[name] = checkpoint[name]
    return extra


def latest_checkpoint(dirpath: str | os.PathLike[str], **storage_options: Any) -> str | None:
    """The path of the checkpoint with the highest global step under `dirpath` (any URL, also
    ``run.h5/ckpt``), for `Trainer.fit(ckpt_path=...)`; None when there is none.

    Ties (``last.ckpt`` next to the top-k file of the same step) go to the ``last*`` one.
    """
    found: list[tuple[int, int, bool, str]] = []
    with opened_store(dirpath, **storage_options) as store:
        for key in store.list(""):
            if "/" in key or not key.endswith(CHECKPOINT_SUFFIX):
                continue
            found.append((*_position(store, key), key.startswith("last"), key))
        url = store.url
    if not found:
        return None
    return join_url(url, max(found)[3])


def _position(store: Store, key: str) -> tuple[int, int]:
    """(global_step, epoch) of the checkpoint at `key`, from its manifest (its plain values on HDF5/Zarr)."""
    if store.supports_arrays:
        tree = store.read_tree(key, select=[])
    else:
        tree = read_manifest(store, key)["extra"]
    return int(tree.get("global_step", -1)), int(tree.get("epoch", -1))


class ExpstoreLogger(Logger):
    """Lightning metrics and hyperparameters through `ExperimentLogger`, so the run shows in
    `expstore ls / logs / plot / compare` and the catalog.

    Logs go to ``<save_dir>/<name>/logs`` (the layout `expstore` commands read), and
    `ModelCheckpoint` without a `dirpath` saves to ``<save_dir>/<name>/checkpoints``.
    """

    def __init__(self, save_dir: str | os.PathLike[str], name: str = "lightning", *, log_to_console: bool = False,
                 **storage_options: Any) -> None:
        super().__init__()
        if not isinstance(save_dir, (str, os.PathLike)):
            raise TypeError(f"save_dir must be a URL or a path, not {type(save_dir).__name__}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str (the run's name), got {name!r}")
        self._save_dir = os.fspath(save_dir)
        self._name = name
        self._log_to_console = log_to_console
        self._storage_options = dict(storage_options)
        self._experiment: ExperimentLogger | None = None

    @property
    def name(self) -> str:
        """The run's name: the experiment name of its logs."""
        return self._name

    @property
    def version(self) -> str:
        """Empty: a run is one folder ``<save_dir>/<name>``; give each run its own name."""
        return ""

    @property
    def save_dir(self) -> str:
        """The root URL the run's folder is in."""
        return self._save_dir

    @property
    def log_dir(self) -> str:
        """The URL of the run's logs."""
        return join_url(join_url(self._save_dir, self._name), "logs")

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentLogger:
        """The `ExperimentLogger` (made on first use, on rank 0 only)."""
        if self._experiment is None:
            self._experiment = ExperimentLogger(self._name, self.log_dir, log_to_console=self._log_to_console,
                                                **self._storage_options)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Record the hyperparameters as the run's config (`log_config`); values JSON cannot hold are
        recorded as their `str`."""
        if isinstance(params, Namespace):
            params = vars(params)
        self.experiment.log_config({str(k): _plain(v) for k, v in dict(params).items()})

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record `self.log` metrics at the trainer's global step."""
        self.experiment.log_metrics({k: _plain(v) for k, v in metrics.items()}, step=step)

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Record the checkpoints `ModelCheckpoint` holds after a save: its last and its best."""
        last = getattr(checkpoint_callback, "last_model_path", "") or None
        best = getattr(checkpoint_callback, "best_model_path", "") or None
        if last or best:
            self.experiment.log_checkpoint({"path": last or best, "best": best})

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """End the run: Lightning's ``success`` / ``failed`` / ``finished`` become ``completed`` /
        ``failed`` / ``interrupted``. A later `fit` / `test` with this logger starts a new session."""
        if self._experiment is not None:
            experiment, self._experiment = self._experiment, None
            experiment.finalize(STATUSES.get(status, status))


def _plain(value: Any) -> Any:
    """A value the log can hold: tensors and numpy scalars as Python numbers, other objects as their `str`."""
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
