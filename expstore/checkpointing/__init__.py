"""Rolling checkpoints on any store: `CheckpointManager` and the seed's helpers around it."""

from .autosave import AutoCheckpoint
from .manager import CheckpointManager, backup_checkpoint, create_checkpoint_manager, resume_from_checkpoint
from .sharded import ShardedArray

__all__ = [
    "AutoCheckpoint",
    "CheckpointManager",
    "ShardedArray",
    "backup_checkpoint",
    "create_checkpoint_manager",
    "resume_from_checkpoint",
]
