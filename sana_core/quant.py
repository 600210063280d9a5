"""8-bit weight storage: int8 weights with one scale per output channel (row), dequantized per layer on the fly.

No extra dependency. Linear, Conv2d and Embedding weights become int8 (absmax per output row, symmetric); biases,
norms and small tables stay in the compute dtype. Resident weights are about half of bf16; each forward builds one
layer's weight in the compute dtype at a time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, …) float → int8 (out, …) and fp32 scales (out,): w ≈ q · scale[:, None…]."""
    flat = w.detach().float().reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(flat / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


class Int8Weight(nn.Module):
    """An int8 ``weight`` with row scales in the compute dtype. A patched weight (a LoRA merged by ComfyUI's patcher
    or ``lora.apply``) is the buffer ``weight_patched`` in the compute dtype, used while ``weight`` is the tensor it
    was patched from: restoring ``weight`` drops it."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        q, scale = _quantize_rows(weight)
        self.weight = nn.Parameter(q, requires_grad=False)  # a parameter, as a host's patcher patches parameters
        self.register_buffer("weight_scale", scale.to(dtype))
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype).clone(), requires_grad=False)
        self.compute_dtype = dtype
        self._patched_from: torch.Tensor | None = None

    def convert_weight(self, w: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """The float weight of int8 values ``w`` (a float copy of ``weight``), for a patcher to add deltas to."""
        shape = (-1,) + (1,) * (w.ndim - 1)
        scale = self.weight_scale.to(w.device, w.dtype).view(shape)
        return w.mul_(scale) if inplace else w * scale

    def set_weight(self, w: torch.Tensor, inplace_update: bool = False, seed: int | None = None) -> None:
        """Use the float weight ``w`` (this weight plus deltas) until ``weight`` is replaced."""
        self.register_buffer("weight_patched", w.to(self.compute_dtype), persistent=False)
        self._patched_from = self.weight

    def _apply(self, fn, *args, **kwargs):  # a move or cast keeps the patched weight linked
        linked = self._buffers.get("weight_patched") is not None and self._patched_from is self.weight
        out = super()._apply(fn, *args, **kwargs)
        if linked:
            self._patched_from = self.weight
        return out

    def dequantize(self) -> torch.Tensor:
        patched = self._buffers.get("weight_patched")
        if patched is not None:
            if self._patched_from is self.weight:
                return patched
            del self._buffers["weight_patched"]  # the weight was restored
            self._patched_from = None
        return self.convert_weight(self.weight.to(self.compute_dtype))


class Int8Linear(Int8Weight):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize(), self.bias)


class Int8Conv2d(Int8Weight):
    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype):
        super().__init__(conv.weight, conv.bias, dtype)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dequantize(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class Int8Embedding(Int8Weight):
    def __init__(self, emb: nn.Embedding, dtype: torch.dtype):
        super().__init__(emb.weight, None, dtype)
        self.padding_idx = emb.padding_idx
        # Gemma's scaled word embedding multiplies its output (transformers keeps the float as scalar_embed_scale)
        scale = getattr(emb, "scalar_embed_scale", getattr(emb, "embed_scale", None))
        self.embed_scale = None if scale is None else float(scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # dequantize only the rows looked up
        out = F.embedding(ids, self.weight).to(self.compute_dtype) * self.weight_scale[ids].unsqueeze(-1)
        if self.embed_scale is not None:
            out = out * torch.tensor(self.embed_scale, dtype=self.compute_dtype)
        return out


def quantize_int8(module: nn.Module, dtype: torch.dtype, min_numel: int = 4096) -> nn.Module:
    """Replace, in place, every Linear / Conv2d / Embedding with at least ``min_numel`` weights by its int8 form;
    everything else is cast to ``dtype``. Returns the module."""
    for name, child in list(module.named_children()):
        big = isinstance(getattr(child, "weight", None), torch.Tensor) and child.weight.numel() >= min_numel
        if isinstance(child, nn.Linear) and big:
            setattr(module, name, Int8Linear(child.weight, child.bias, dtype))
        elif isinstance(child, nn.Conv2d) and big:
            setattr(module, name, Int8Conv2d(child, dtype))
        elif isinstance(child, nn.Embedding) and big:
            setattr(module, name, Int8Embedding(child, dtype))
        else:
            quantize_int8(child, dtype, min_numel)
    for name, p in list(module.named_parameters(recurse=False)):
        if p.is_floating_point() and p.dtype != dtype:
            setattr(module, name, nn.Parameter(p.detach().to(dtype), requires_grad=False))
    return module
