"""The Zarr backend: a Zarr 3 store (local, memory or S3) whose values switch by one small pointer."""

from .store import open_url

__all__ = ["open_url"]
