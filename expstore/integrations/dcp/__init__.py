"""torch.distributed.checkpoint on any expstore URL: `dcp.save(state, storage_writer=StoreWriter(url))`,
`dcp.load(state, storage_reader=StoreReader(url))`, plus checks and removal of such checkpoints."""

from .layout import DATA_PREFIX, METADATA_KEY, CheckpointExists, CheckpointNotFound
from .reader import StoreReader, read_dcp_metadata
from .verify import delete_dcp_checkpoint, verify_dcp_checkpoint
from .writer import StoreWriter

__all__ = [
    "DATA_PREFIX",
    "METADATA_KEY",
    "CheckpointExists",
    "CheckpointNotFound",
    "StoreReader",
    "StoreWriter",
    "delete_dcp_checkpoint",
    "read_dcp_metadata",
    "verify_dcp_checkpoint",
]
