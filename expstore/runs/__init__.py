"""Runs of an experiment section on any store: one DataFrame per model type, essential metadata in `df.attrs`.

The "metadata storage" layout of runs, in any store (URL, path or `Store`)::

    <section>_<TS>[_e<epochs>]_<model>.pkl                    one DataFrame per model type, attrs inside
    <section>_<TS>[_e<epochs>]_<model>.parquet                the same with format="parquet" (attrs kept)
    <section>_<TS>[_e<epochs>]_checkpoint_metadata.pkl        metrics of the checkpoints, no weights
                                                              (.json for parquet runs)
    <section>_<TS>[_e<epochs>]_<model>_<dataset>_<name>_*     model weights, one CheckpointManager
                                                              experiment per checkpoint, tagged <name>

`<TS>` is ``%Y%m%d_%H%M%S``; ``_e<epochs>`` appears when `epochs` is given. Legacy runs
(``<section>_<TS>_<model>.pkl`` + ``<section>_<TS>_meta.json``) load the same way.

Decisions (docs/runs.md):

* `results` is ``{model_type: DataFrame}``; `checkpoints` is ``{model_type: {dataset: {name:
  {"model": weights, metric: value, ...}}}}`` (names such as ``at_threshold``, ``final``).
  ``model`` is a tree of numpy arrays (or an object with ``state_dict()``) and goes through
  `CheckpointManager`; everything else is metrics.
* The caller's DataFrames are not modified; attrs hold the caller's attrs, then ``section``,
  ``timestamp``, ``model_type`` and the essential metadata, all plain JSON values.
* Derivable metadata (``grids``, ``num_datasets``, ``dataset_names``, ``depths``,
  ``activations``) warns (`DerivableMetadataWarning`) and is dropped: `derive_metadata` computes it.
* Two runs of one section in the same second do not overwrite each other: the later one takes the
  next free second as its timestamp. DataFrames are written last, so a run is visible to
  `load_run` / `list_runs` only once its metrics and weights are stored.
* Storage options go in ``storage_options={...}`` (keyword arguments of `save_run` are metadata).
* Pickle is read only for runs saved as ``.pkl``; parquet runs never unpickle.
"""

from __future__ import annotations

try:
    import pandas  # noqa: F401 - every module of the package needs it: say what to install, once
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f'expstore.runs needs pandas and pyarrow: pip install "expstore[pandas]" ({exc})') from exc

from .inputs import DerivableMetadataWarning
from .listing import list_runs
from .migration import migrate_legacy_runs
from .section_runs import derive_metadata, load_checkpoint_metadata, load_run, load_run_checkpoint, save_run

__all__ = [
    "DerivableMetadataWarning",
    "derive_metadata",
    "list_runs",
    "load_checkpoint_metadata",
    "load_run",
    "load_run_checkpoint",
    "migrate_legacy_runs",
    "save_run",
]
