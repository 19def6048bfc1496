"""`StoreLocation`: what `StoreWriter` and `StoreReader` share: the checkpoint's URL and its store, opened lazily."""

from __future__ import annotations

import os
from typing import Any

from expstore.store import Store, open_store

from .layout import checkpoint_url, is_supported_url

__all__ = ["StoreLocation"]


class StoreLocation:
    """The checkpoint URL a DCP storage reader or writer works on, and the store there (opened on first use)."""

    def __init__(self, url: str | os.PathLike[str], storage_options: dict[str, Any]) -> None:
        super().__init__()
        self.url = checkpoint_url(url)
        self.storage_options = storage_options
        self._store: Store | None = None

    @property
    def checkpoint_id(self) -> str:
        """The URL this reader or writer works on (DCP logs it)."""
        return self.url

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """True for a local path or a URL whose scheme expstore opens."""
        return is_supported_url(checkpoint_id)

    def move_to(self, checkpoint_id: str | os.PathLike[str] | None) -> None:
        """Work on `checkpoint_id` from now on (None: stay); the store of the old URL is closed."""
        if checkpoint_id is not None and checkpoint_url(checkpoint_id) != self.url:
            self.close()
            self.url = checkpoint_url(checkpoint_id)

    def store(self) -> Store:
        """The store at this URL, opened on first use."""
        if self._store is None:
            self._store = open_store(self.url, **self.storage_options)
        return self._store

    def close(self) -> None:
        """Close the store this opened (a later use opens it again)."""
        if self._store is not None:
            self._store.close()
            self._store = None
