"""The checkpoint codec: one state tree <-> one object in the safetensors layout (its public API).

Layout (little-endian throughout)::

    [8 bytes: N, u64]  [N bytes: JSON header, space-padded so 8 + N is a multiple of 8]  [array bytes]

The header maps each tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the start of the array bytes, contiguous from 0, in file order, covering the array bytes
exactly) plus ``"__metadata__": {"expstore": "<manifest JSON>"}``. The manifest holds the tree
skeleton of `expstore.format.tree.flatten`, per array its exact numpy dtype, shape, encoding and
crc32c, and the caller's `extra` dict. `safetensors.numpy.load_file` reads the arrays.

Arrays of a dtype safetensors knows (see `NATIVE_DTYPES`) are written natively; any other array
(big-endian, complex, datetime64, strings, structured, ...) as a ``U8`` tensor of its raw bytes, and
the manifest says how to view them. Pickle is used only when the caller opts in, on write and on read.

The header and its validation live in `checkpoint_header`, the encoder in `checkpoint_writer`,
whole, ranged and memory-mapped reading in `checkpoint_reader`; all read and write through the
`source` protocols, which `expstore.store.Store` meets by shape.
"""

from ..errors import PickleNotAllowed
from .checkpoint_header import FORMAT, FORMAT_VERSION, NATIVE_DTYPES, CheckpointLayout, parse_header, read_header_bytes
from .checkpoint_reader import (
    check_object,
    read_checkpoint,
    read_manifest,
    read_ranges,
    read_state,
    rebuild_tree,
    refuse_pickle,
)
from .checkpoint_writer import encode, pickle_leaf, write_checkpoint, write_flat

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "NATIVE_DTYPES",
    "CheckpointLayout",
    "PickleNotAllowed",
    "check_object",
    "encode",
    "parse_header",
    "pickle_leaf",
    "read_checkpoint",
    "read_header_bytes",
    "read_manifest",
    "read_ranges",
    "read_state",
    "rebuild_tree",
    "refuse_pickle",
    "write_checkpoint",
    "write_flat",
]
