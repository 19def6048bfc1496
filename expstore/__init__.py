"""expstore: export results, log events and write rolling checkpoints to any storage named by a URL."""

from .errors import (
    BackendUnavailable,
    CorruptData,
    InvalidKey,
    InvalidURL,
    KeyNotFound,
    PreconditionFailed,
    StoreError,
)
from .store import Store, default_url, open_store

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "CorruptData",
    "InvalidKey",
    "InvalidURL",
    "KeyNotFound",
    "PreconditionFailed",
    "Store",
    "StoreError",
    "default_url",
    "open_store",
]
