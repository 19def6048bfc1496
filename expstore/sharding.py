"""`from expstore.sharding import ShardedArray` keeps working; the code is in `expstore.checkpointing.sharded`."""

from .checkpointing.sharded import ShardedArray

__all__ = ["ShardedArray"]
