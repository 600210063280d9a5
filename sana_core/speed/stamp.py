"""The one answer to "have these weights changed since I cached from them?", for every cache of the speed layer.

A stamp records, for each tensor, where its data lives, its dtype, device and shape, and what it holds:
- a replaced or moved tensor (a patcher assigning a new Parameter, ``.to()``, a reload) has a new address;
- an in-place edit bumps the tensor's version counter; tensors made under ``torch.inference_mode()`` (as ComfyUI
  makes them) have no version counter, so their contents are summed instead (fp64 or int64 sums: any single changed
  element changes the sum).

Caches of values derived from the weights (the caption's keys and values, convolution transforms) compare full
stamps. A CUDA graph reads the weights' memory when it replays, so an in-place edit reaches it by itself: graphs
compare addresses only (``contents=False``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def tensors_of(*modules: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of the modules, in a fixed order."""
    return [t for m in modules for t in (*m.parameters(), *m.buffers())]


def stamp(tensors: Iterable[torch.Tensor], contents: bool = True) -> tuple:
    """A hashable summary of the tensors: equal stamps mean the same data at the same addresses."""
    tensors = list(tensors)
    where = tuple((t.data_ptr(), t.dtype, t.device, tuple(t.shape)) for t in tensors)
    if not contents:
        return where
    versions = tuple(None if t.is_inference() else t._version for t in tensors)
    return where, versions, _sums([t for t in tensors if t.is_inference()])


def _sums(tensors: list[torch.Tensor]) -> tuple:
    """Exact-enough content sums, read back in one transfer per device."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        s = t.detach().sum(dtype=torch.float64 if t.is_floating_point() else torch.int64)
        by_device.setdefault(t.device, []).append(s.double())
    return tuple(v for sums in by_device.values() for v in torch.stack(sums).tolist())
