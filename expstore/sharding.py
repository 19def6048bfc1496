"""Kept so that `from expstore.checkpointing.sharded import ShardedArray` works; the code is `expstore.checkpointing.sharded`."""

from .checkpointing.sharded import ShardedArray

__all__ = ["ShardedArray"]
