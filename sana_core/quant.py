"""8-bit weight storage: int8 or fp8 weights with one scale per output channel (row), dequantized per layer on the
fly.

No extra dependency. Linear, Conv2d (and, for int8, Embedding) weights are stored in 8 bits, scaled by their row's
absolute maximum (symmetric); biases, norms and small tables stay in the compute dtype. Resident weights are about
half of bf16; each forward builds one layer's weight in the compute dtype at a time. fp8 (``fp8_e4m3fn``,
``fp8_e5m2``, the formats ComfyUI offers for other models) keeps relative precision across a row's small and large
values, int8 keeps absolute precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# storage name → (dtype, the largest value the row scale maps to)
STORAGE = {"int8": (torch.int8, 127.0), "fp8_e4m3fn": (torch.float8_e4m3fn, 448.0),
           "fp8_e5m2": (torch.float8_e5m2, 57344.0)}


def _quantize_rows(w: torch.Tensor, storage: str = "int8") -> tuple[torch.Tensor, torch.Tensor]:
    """(out, …) float → 8-bit (out, …) and fp32 scales (out,): w ≈ q · scale[:, None…]."""
    dtype, top = STORAGE[storage]
    flat = w.detach().float().reshape(w.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp(min=1e-12) / top
    q = flat / scale[:, None]
    q = torch.round(q).clamp_(-127, 127).to(torch.int8) if dtype is torch.int8 else q.to(dtype)
    return q.reshape(w.shape), scale


class QuantWeight(nn.Module):
    """An 8-bit ``weight`` (int8 or fp8) with row scales in the compute dtype. A patched weight (a LoRA merged by
    ComfyUI's patcher or ``lora.apply``) is the buffer ``weight_patched`` in the compute dtype, used while ``weight``
    is the tensor it was patched from: restoring ``weight`` drops it."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype, storage: str = "int8"):
        super().__init__()
        q, scale = _quantize_rows(weight, storage)
        self.weight = nn.Parameter(q, requires_grad=False)  # a parameter, as a host's patcher patches parameters
        self.register_buffer("weight_scale", scale.to(dtype))
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(dtype).clone(), requires_grad=False)
        self.compute_dtype = dtype
        self._patched_from: torch.Tensor | None = None

    def convert_weight(self, w: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """The float weight of 8-bit values ``w`` (a float copy of ``weight``), for a patcher to add deltas to."""
        shape = (-1,) + (1,) * (w.ndim - 1)
        scale = self.weight_scale.to(w.device, w.dtype).view(shape)
        return w.mul_(scale) if inplace else w * scale

    def set_weight(self, w: torch.Tensor, inplace_update: bool = False, seed: int | None = None,
                   return_weight: bool = False) -> torch.Tensor | None:
        """Use the float weight ``w`` (this weight plus deltas) until ``weight`` is replaced; with ``return_weight``
        (a patch applied per call) only return it in the compute dtype."""
        if return_weight:
            return w.to(self.compute_dtype)
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


class QuantLinear(QuantWeight):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantize(), self.bias)


class QuantConv2d(QuantWeight):
    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype, storage: str = "int8"):
        super().__init__(conv.weight, conv.bias, dtype, storage)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.dequantize(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class QuantEmbedding(QuantWeight):
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


def quantize(module: nn.Module, dtype: torch.dtype, storage: str = "int8", min_numel: int = 4096,
             operations=None) -> nn.Module:
    """Replace, in place, every Linear / Conv2d (and, for int8, Embedding) with at least ``min_numel`` weights by its
    8-bit form (``storage``: a key of ``STORAGE``); everything else is cast to ``dtype``. The 8-bit classes are
    ``operations.QuantLinear`` and ``QuantConv2d`` when given (``layers.py``), else this file's. Returns the module."""
    linear = getattr(operations, "QuantLinear", QuantLinear)
    conv = getattr(operations, "QuantConv2d", QuantConv2d)
    for name, child in list(module.named_children()):
        big = isinstance(getattr(child, "weight", None), torch.Tensor) and child.weight.numel() >= min_numel
        if isinstance(child, nn.Linear) and big:
            setattr(module, name, linear(child.weight, child.bias, dtype, storage))
        elif isinstance(child, nn.Conv2d) and big:
            setattr(module, name, conv(child, dtype, storage))
        elif isinstance(child, nn.Embedding) and big and storage == "int8":
            setattr(module, name, QuantEmbedding(child, dtype))
        else:
            quantize(child, dtype, storage, min_numel, operations)
    for name, p in list(module.named_parameters(recurse=False)):
        if p.is_floating_point() and p.dtype != dtype:
            setattr(module, name, nn.Parameter(p.detach().to(dtype), requires_grad=False))
    return module

