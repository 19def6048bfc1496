"""Host-memory snapshots of the torch tensors of a state, for async saves, into buffers reused from one
save to the next: one buffer per storage, so tensors that share a storage (tied weights, views) share
their copy too. A CPU storage is copied by the snapshot pool's copy threads; a device (CUDA) storage is
copied into pinned host memory with `non_blocking=True`, all of them before one synchronize, so the
caller waits for the device-to-host copies alone.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..format.torch_tensors import HostCopy, tensor_meta, with_grad

__all__ = ["TensorBuffers", "tensors_in"]


class TensorBuffers:
    """The host buffers of the last tensor snapshot, by the path of each storage's first tensor."""

    def __init__(self) -> None:
        self._buffers: dict[str, Any] = {}

    def take(self, tensors: list[tuple[str, Any]], copies: list[tuple[np.ndarray, np.ndarray]]) -> dict[int, Any]:
        """{id(tensor): its copy} for `copy.deepcopy`'s memo. CPU copies are appended to `copies` (numpy
        pairs the caller copies); device copies are done and waited for here. A device tensor's copy is a
        `HostCopy`, saved as a tensor of its device. Tensors no store can hold are left to deepcopy."""
        torch = sys.modules["torch"]
        storages: dict[tuple[str, int], list[tuple[str, Any]]] = {}
        for path, tensor in tensors:
            if tensor.layout == torch.strided and tensor.device.type != "meta" and tensor.untyped_storage().nbytes():
                storages.setdefault((str(tensor.device), tensor.untyped_storage().data_ptr()), []).append((path, tensor))
        used: dict[str, Any] = {}
        memo: dict[int, Any] = {}
        on_device = False
        for (device, _), members in storages.items():
            storage = members[0][1].untyped_storage()
            source = torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)
            key, off_cpu = members[0][0], device != "cpu"
            buffer = self._buffers.pop(key, None)
            if buffer is None or buffer.numel() != source.numel():
                buffer = torch.empty(source.numel(), dtype=torch.uint8, pin_memory=off_cpu and torch.cuda.is_available())
            if off_cpu:
                buffer.copy_(source, non_blocking=True)
                on_device = True
            else:
                copies.append((buffer.numpy(), source.numpy()))
            used[key] = buffer
            for _, tensor in members:
                view = torch.empty(0, dtype=tensor.dtype).set_(
                    buffer.untyped_storage(), tensor.storage_offset(), tensor.shape, tensor.stride()
                )
                meta = tensor_meta(tensor)
                memo[id(tensor)] = HostCopy(view, device, meta) if off_cpu else with_grad(view, meta)
        if on_device:
            torch.cuda.synchronize()
        self._buffers = used
        return memo


def tensors_in(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, tensor) of every torch tensor reachable through dicts, lists and tuples; [] without torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    found: list[tuple[str, Any]] = []
    stack = [(node, path)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, torch.Tensor):
            found.append((where, value))
        elif isinstance(value, dict):
            stack.extend((v, f"{where}/{k}") for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, f"{where}/{i}") for i, v in enumerate(value))
    return found
