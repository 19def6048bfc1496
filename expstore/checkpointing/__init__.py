"""Rolling checkpoints on any store: `CheckpointManager` and the helpers around it.

`verify_object`, `objects_of` and `object_manifest` work on one checkpoint at a key of a store,
whichever kind it is (what `expstore verify`, `ls` and `show` use).

Inside: `names` (keys and argument checks), `index` (the index and its commit), `retention`,
`reading` (one object vs sharded), `sharded`, `snapshot` and `tensor_snapshot` (async-save copies),
`manager`, `resume` (load from a URL), `transfer` (copies between stores), `autosave` (save on
exception or signal).
"""

from .autosave import AutoCheckpoint
from .manager import CheckpointManager, create_checkpoint_manager
from .reading import object_manifest, objects_of, verify_object
from .resume import resume_from_checkpoint
from .sharded import ShardedArray
from .transfer import backup_checkpoint

__all__ = [
    "AutoCheckpoint",
    "CheckpointManager",
    "ShardedArray",
    "backup_checkpoint",
    "create_checkpoint_manager",
    "object_manifest",
    "objects_of",
    "resume_from_checkpoint",
    "verify_object",
]
