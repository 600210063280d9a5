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


class _Int8Weight(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype):
        super().__init__()
        q, scale = _quantize_rows(weight)
        self.register_buffer("weight_q", q)
        self.register_buffer("weight_scale", scale.to(dtype))
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype).clone(), requires_grad=False)
        self.compute_dtype = dtype

    def dequantize(self) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.weight_q.ndim - 1)
        return self.weight_q.to(self.compute_dtype) * self.weight_scale.view(shape)


class Int8Linear(_Int8Weight):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize(), self.bias)


class Int8Conv2d(_Int8Weight):
    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype):
        super().__init__(conv.weight, conv.bias, dtype)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dequantize(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class Int8Embedding(_Int8Weight):
    def __init__(self, emb: nn.Embedding, dtype: torch.dtype):
        super().__init__(emb.weight, None, dtype)
        self.padding_idx = emb.padding_idx
        # Gemma's scaled word embedding multiplies its output (transformers keeps the float as scalar_embed_scale)
        scale = getattr(emb, "scalar_embed_scale", getattr(emb, "embed_scale", None))
        self.embed_scale = None if scale is None else float(scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # dequantize only the rows looked up
        out = F.embedding(ids, self.weight_q).to(self.compute_dtype) * self.weight_scale[ids].unsqueeze(-1)
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
