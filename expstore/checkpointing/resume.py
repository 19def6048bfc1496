"""`resume_from_checkpoint`: load the checkpoint to resume from, given the URL of one checkpoint or of a
checkpoint directory, without setting up a manager first."""

from __future__ import annotations

from typing import Any

from ..errors import KeyNotFound
from ..store.locate import opened_store
from .manager import CheckpointManager
from .names import CKPT_RE, INDEX_RE, MANIFEST, split_checkpoint_url
from .reading import load_object

__all__ = ["resume_from_checkpoint"]


def resume_from_checkpoint(
    url_or_ref: Any,
    *,
    experiment: str | None = None,
    allow_pickle: bool = False,
    map_location: Any = None,
    **storage_options: Any,
) -> dict[str, Any]:
    """Load a checkpoint to resume from.

    The URL of one checkpoint (a ref) loads that one. The URL of a checkpoint directory loads the
    latest valid checkpoint of its experiment (``experiment=`` picks one when several share the
    directory; `ValueError` if ambiguous); `FileNotFoundError` when there is none. Torch tensors
    are placed by `map_location` as with `torch.load`.
    """
    if isinstance(url_or_ref, str):
        last = url_or_ref.rstrip("/").rpartition("/")[2]
        if CKPT_RE.match(last) or last == MANIFEST:
            url, key = split_checkpoint_url(url_or_ref)
            with opened_store(url, **storage_options) as store:
                return load_object(store, key, allow_pickle=allow_pickle, map_location=map_location)
    with opened_store(url_or_ref, **storage_options) as store:
        if experiment is None:
            found = [m["exp"] for key in store.list("") if (m := INDEX_RE.match(key))]
            if not found:
                raise KeyNotFound("no checkpoint index in this directory", url=store.url)
            if len(found) > 1:
                raise ValueError(f"{store.url!r} holds the experiments {found!r}; pass experiment=")
            experiment = found[0]
        manager = CheckpointManager(store, experiment, keep_last_n=None, allow_pickle=allow_pickle)
        return manager.load_checkpoint(map_location=map_location)
