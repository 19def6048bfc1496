"""The HDF5 backend: one HDF5 file as a store, opened per operation, changed through a journal."""

from .store import HDF5Store, open_url

__all__ = ["HDF5Store", "open_url"]
