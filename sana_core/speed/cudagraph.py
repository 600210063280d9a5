"""CUDA graphs for the transformer on a GPU: each input signature is captured once and replayed on every step.

A Sana step is many small kernels; launched one by one from Python the GPU can wait on the CPU between them.
Replaying a captured graph issues them all in one call. The captured forward is the eager one, unchanged,
so the result is the eager result (same kernels, same order).

Rules that keep a replay correct:
- Inputs are copied into static buffers; the output is cloned out of the graph's memory before it is returned.
- A graph reads the weights at the addresses it saw. Every call compares the addresses of all parameters and
  buffers with those at capture (``stamp``; a host that offloads, reloads or patches weights moves them) and
  recaptures on any difference; an in-place edit needs nothing, the replay reads the edited memory. Moving the
  whole model (``.to``) drops every graph at once.
- Only without autograd, on a CUDA tensor, outside another capture (``policy.cuda_graphs``).
- A signature is captured on its second call with the same weights; the first runs eagerly. A one-off call (a
  prompt encoded once, then the encoder offloaded) never pays for a capture.
- A signature whose capture fails (an op that cannot be captured) runs eagerly from then on, with one log line.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch

from .stamp import stamp, tensors_of

log = logging.getLogger(__name__)

MAX_GRAPHS = 4  # signatures kept per model (batch sizes × image sizes × PAG layouts), least recently used dropped


def _signature(t: torch.Tensor | None):
    return None if t is None else (tuple(t.shape), t.dtype, t.device)


class _Entry:
    def __init__(self, weights: tuple):
        self.weights = weights
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: list[torch.Tensor | None] = []
        self.output: torch.Tensor | None = None


class GraphCache:
    """Captured forwards of one module, keyed by the input signature."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._failed: set[tuple] = set()
        self._seen: dict[tuple, tuple] = {}  # signature → weight addresses of its last eager call
        self._pool = None

    def clear(self) -> None:
        self._entries.clear()
        self._seen.clear()
        self._pool = None

    def __len__(self) -> int:
        return len(self._entries)

    def run(self, module: torch.nn.Module, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor | None],
            static: tuple) -> torch.Tensor:
        key = (tuple(_signature(t) for t in inputs), static, torch.is_inference_mode_enabled(),
               torch.cuda.current_device())
        if key in self._failed:
            return fn(*inputs)
        weights = stamp(tensors_of(module), contents=False)
        entry = self._entries.get(key)
        if entry is None or entry.weights != weights:
            self._entries.pop(key, None)
            if self._seen.get(key) != weights:  # first call with these weights: eager
                if len(self._seen) > 64:  # a long session of ever-new shapes keeps this small
                    self._seen.clear()
                self._seen[key] = weights
                return fn(*inputs)
            try:
                entry = self._capture(fn, inputs, weights)
            except RuntimeError as e:  # an op that cannot be captured (CUDA errors are RuntimeErrors): stays eager
                self._failed.add(key)
                log.warning("Sana: CUDA graph capture failed (%s: %s); this input shape runs eagerly",
                            type(e).__name__, e)
                return fn(*inputs)
            self._entries[key] = entry
            while len(self._entries) > MAX_GRAPHS:
                self._entries.popitem(last=False)
        self._entries.move_to_end(key)
        for dst, src in zip(entry.inputs, inputs):
            if dst is not None:
                dst.copy_(src)
        entry.graph.replay()
        return entry.output.clone()

    def _capture(self, fn, inputs, weights) -> _Entry:
        entry = _Entry(weights)
        entry.inputs = [None if t is None else t.clone() for t in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: cuBLAS/cuDNN workspaces, lazy caches
            fn(*entry.inputs)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            entry.output = fn(*entry.inputs)
        entry.graph = graph
        return entry
