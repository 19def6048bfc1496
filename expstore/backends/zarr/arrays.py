"""The arrays a ZarrStore writes: each carries the crc32c of its bytes, and each read checks it.

Damage anywhere in an array (a missing or truncated chunk, flipped bytes, a chunk its codecs cannot
decode) raises `CorruptData` naming the array's path in the tree and the key, so a checkpoint
loader can fall back to an older one. A dtype zarr cannot hold (`longdouble`, a structured dtype
with a subarray field or padding) is stored as its raw bytes, a uint8 array with one more axis of
the item size, and the tree's dtype record turns it back into the exact numpy array.
"""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import numpy as np
import zarr.api.asynchronous as zasync
from zarr.dtype import parse_data_type

from ...errors import CorruptData, StoreError
from ...format.checksum import CRC32C_ATTRIBUTE, array_crc32c, check_array_crc32c
from ...format.tree import dtype_from_description
from ...format.typed_leaves import DTYPE_ATTRIBUTE

__all__ = ["PASSTHROUGH", "check_bytes", "open_array", "read_arrays", "read_selection", "write_array", "write_arrays"]

RAW_DTYPE_ATTRIBUTE = "expstore_raw_dtype"  # on an array stored as raw bytes: the numpy dtype it holds
# Every chunk is written, even one equal to the fill value: a chunk file that is missing is then
# always damage, and values zarr would compare equal to the fill value (-0j) keep their exact bytes.
DEFAULT_CONFIG = {"write_empty_chunks": True}
PASSTHROUGH: tuple[type[BaseException], ...] = (OSError, StoreError)  # transport errors are not damage
_NO_SPEC_WARNING = ".*does not have a Zarr V3 specification.*"


def zarr_holds(dtype: np.dtype) -> bool:
    """Whether zarr stores `dtype` as itself: it knows the type, and a structured one keeps its exact layout."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_SPEC_WARNING)
        try:
            native = parse_data_type(dtype, zarr_format=3).to_native_dtype()
        except (ValueError, TypeError):
            return False
    return dtype.names is None or native == dtype


async def write_arrays(
    zstore: Any,
    names: dict[str, str],
    arrays: dict[str, np.ndarray],
    options: dict[str, Any],
    dtype_notes: dict[str, str] | None = None,
) -> None:
    """Create the array `names[path]` for every `arrays[path]`, concurrently, each with its crc32c
    (and `dtype_notes[path]`, the dtype name of a typed leaf its unsigned ints carry)."""
    notes = dtype_notes or {}
    with warnings.catch_warnings():
        # Fixed-length strings, structured and void dtypes have no Zarr v3 spec yet; the tree
        # records each numpy dtype itself, so the warning is noise here.
        warnings.filterwarnings("ignore", message=_NO_SPEC_WARNING)
        await asyncio.gather(*(write_array(zstore, names[p], a, options, notes.get(p)) for p, a in arrays.items()))


async def write_array(zstore: Any, name: str, array: np.ndarray, options: dict[str, Any], dtype_note: str | None = None) -> None:
    """Create one array holding `array`, its crc32c in the attributes (raw bytes if zarr lacks the dtype)."""
    options = {**options, "config": {**DEFAULT_CONFIG, **(options.get("config") or {})}}
    attributes: dict[str, Any] = {CRC32C_ATTRIBUTE: array_crc32c(array)}
    if dtype_note is not None:
        attributes[DTYPE_ATTRIBUTE] = dtype_note
    if not zarr_holds(array.dtype):
        attributes[RAW_DTYPE_ATTRIBUTE] = str(array.dtype)
        array = np.require(array, requirements="C").reshape(-1).view(np.uint8).reshape(array.shape + (array.dtype.itemsize,))
        options.pop("chunks", None)  # a user's chunk shape has one axis fewer
    if array.ndim == 0:
        options.pop("chunks", None)  # a user's chunk shape is for arrays with dimensions
    await zasync.create_array(zstore, name=name, data=array, attributes=attributes, **options)


async def open_array(zstore: Any, name: str, *, url: str, key: str, path: str) -> Any:
    """Open the array at node `name`; `CorruptData` naming `path` when it is missing."""
    try:
        return await zasync.open_array(store=zstore, path=name, mode="r", zarr_format=3)
    except (FileNotFoundError, KeyError) as exc:
        raise CorruptData(f"array {path!r} named by the live version is missing", url=url, key=key) from exc


async def read_selection(
    array: Any, selection: Any, *, url: str, key: str, path: str, passthrough: tuple[type[BaseException], ...] = PASSTHROUGH
) -> np.ndarray:
    """`array[selection]`; a chunk that does not decode is `CorruptData` naming `path`, not a codec's error."""
    try:
        return np.asarray(await array.getitem(selection))
    except passthrough:
        raise
    except Exception as exc:  # noqa: BLE001 - every codec has its own errors (ValueError, RuntimeError, zlib.error, ...)
        raise CorruptData(f"array {path!r} cannot be decoded: {type(exc).__name__}: {exc}", url=url, key=key) from None


async def read_arrays(
    zstore: Any, names: dict[str, str], dtypes: dict[str, Any], *, url: str, key: str,
    passthrough: tuple[type[BaseException], ...] = PASSTHROUGH,
) -> dict[str, np.ndarray]:
    """Read and check the array `names[path]` for every path; the first failure is raised once all have ended."""
    results = await asyncio.gather(
        *(read_array(zstore, n, dtypes[p], url=url, key=key, path=p, passthrough=passthrough) for p, n in names.items()),
        return_exceptions=True,  # no read is left pending on zarr's loop when one fails
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return dict(zip(names, results))


async def read_array(
    zstore: Any, name: str, descr: Any, *, url: str, key: str, path: str,
    passthrough: tuple[type[BaseException], ...] = PASSTHROUGH,
) -> np.ndarray:
    """Read one array whole, restore its numpy dtype, and check its crc32c when it has one."""
    array = await open_array(zstore, name, url=url, key=key, path=path)
    values = await read_selection(array, (), url=url, key=key, path=path, passthrough=passthrough)
    attributes = array.metadata.attributes
    dtype = dtype_from_description(descr)
    if RAW_DTYPE_ATTRIBUTE in attributes:
        if values.dtype != np.uint8 or values.ndim == 0 or values.shape[-1] != dtype.itemsize:
            raise CorruptData(f"array {path!r}: raw bytes of shape {values.shape} cannot hold {dtype}", url=url, key=key)
        values = np.ascontiguousarray(values).view(dtype).reshape(values.shape[:-1])
    elif values.dtype != dtype:
        # zarr stores big-endian data little-endian and reads it back so; restore the written dtype.
        values = values.astype(dtype)
    expected = attributes.get(CRC32C_ATTRIBUTE)
    if expected is not None:
        check_array_crc32c(values, int(expected), url=url, key=key, path=path)
    return values


def check_bytes(array: Any, data: bytes, *, url: str, key: str) -> None:
    """Check a whole bytes value read from `array` against the crc32c written beside it, when there is one."""
    expected = array.metadata.attributes.get(CRC32C_ATTRIBUTE)
    if expected is not None:
        check_array_crc32c(np.frombuffer(data, np.uint8), int(expected), url=url, key=key, path="<bytes>")
