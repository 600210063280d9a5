"""The layer classes every Sana module is built from, as one namespace: ``operations``.

The transformer, its ControlNet and the DC-AE take ``operations`` in their constructors and build each Linear, Conv2d
and RMSNorm from it, as a host's own model code does. The default, ``Operations``, is ``torch.nn``'s layers plus
Sana's RMSNorm: the reference. A host passes its own subclasses (docs/architecture.md, "Host-managed layers"), which
may keep a layer's weights elsewhere and cast them per call; such a layer says so with ``casts_per_call``, and the
speed layer's forms, which read weights directly, fall back to the reference forward for it.
"""

from __future__ import annotations

import torch
from torch import nn

from .caches import kept
from .quant import QuantConv2d, QuantLinear


class RMSNorm(nn.Module):
    """x·rsqrt(mean(x²)+eps) with an fp32 mean, cast to the weight dtype only when that is half precision; then the
    weight (and bias) of the last dim (diffusers' ``RMSNorm``)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = False, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(dim, device=device, dtype=dtype)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C)
        return rms_norm(x, self.weight, self.bias, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    x = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)  # promoted to fp32
    if weight.dtype in (torch.float16, torch.bfloat16):
        x = x.to(weight.dtype)
    x = x * weight
    if bias is not None:
        x = x + bias
    return x


class Operations:
    """The reference layers. 8-bit storage (``quant.quantize``) swaps Linear and Conv2d layers for ``QuantLinear``
    and ``QuantConv2d`` of the same namespace."""
    Linear = nn.Linear
    Conv2d = nn.Conv2d
    RMSNorm = RMSNorm
    QuantLinear = QuantLinear
    QuantConv2d = QuantConv2d


def casts_per_call(module: nn.Module) -> bool:
    """Whether a host casts the weights of this module or any layer inside it per call (weights kept on another
    device, or patched on the fly): then only the layers' own forwards see the right weights. The layers that can
    say so are listed once per module (``caches``)."""
    castable = kept(module, "castable", lambda: [m for m in module.modules() if hasattr(type(m), "casts_per_call")])
    return any(m.casts_per_call for m in castable)
