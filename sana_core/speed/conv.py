"""Fewer-FLOP forms of the DC-AE's costliest convolutions, for CPUs in fp32 (``policy.fast_convs``).

oneDNN runs a plain 3×3 convolution near the matmul roofline, so the way past it is less arithmetic and less
memory traffic. On the CPU in fp32 the DC-AE's ResBlock stages run channels-last (NHWC): oneDNN's
direct and transposed convs are faster in that layout, the channel norms reduce over the contiguous dim, and the
Winograd tiles gather with plain strided views. The forms below give the same function as the plain ops up to fp32
rounding (tests pin them against fp64):

- ``upsample_conv3x3``: nearest 2× upsampling followed by a 3×3 conv equals, for each of the four output phases, a
  2×2 conv on the low-resolution input with summed taps, i.e. one stride-2 transposed conv with a 4×4 kernel; 16
  instead of 36 multiply-adds per input pixel and channel pair (2.25× fewer), and the upsampled tensor is never
  built.
- ``winograd_conv3x3``: Winograd F(4×4, 3×3): 36 instead of 144 multiplies per 4×4 output tile,
  as 36 batched matmuls, in stripes of tile rows whose transforms stay in cache (the bias and the ResBlock's SiLU are
  applied there too). It is used from ``WINOGRAD_MIN_CHANNELS`` input channels, where those matmuls are large; the
  narrower stages keep oneDNN's direct conv (channels-last). Its transforms scale the summed terms by up to 5 and 8,
  so it rounds more than the direct conv (the tests bound the difference).

The derived weights are cached on the module (not in its state dict), keyed by the weight's ``stamp``, so a reload,
a patched weight or an in-place edit (with or without autograd's version counter) recomputes them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import caches
from . import policy
from .stamp import stamp

WINOGRAD_MIN_CHANNELS = 256
_TILES = 2**16  # C_in × tiles per Winograd stripe: the transformed tiles of a stripe fit in a large cache


def _cached(conv: nn.Conv2d, kind: str, make) -> torch.Tensor:
    w = conv.weight
    key = (kind, stamp([w]))
    cache = caches.kept(conv, "fast_conv", dict)
    if key not in cache:
        cache.clear()
        with torch.no_grad():
            cache[key] = make(w.detach())
    return cache[key]


# Transposed-conv tap k of a stride-2, padding-1, 4-tap kernel reaches output row 2m+a from input row m-1 (k=3, a=0),
# m (k=1, a=0; k=2, a=1) or m+1 (k=0, a=1); the 3×3 taps of the upsampled conv that land on each: see upsample_conv3x3.
_TAPS = ((2,), (1, 2), (0, 1), (0,))


def _upsample_kernel(w: torch.Tensor, repeats: int) -> torch.Tensor:
    """(Co, Ci, 3, 3) → the (Ci, Co, 4, 4) transposed-conv kernel of nearest-2× + this conv (+ the shortcut)."""
    w64 = w.double()  # the summed taps are rounded once, to the weight dtype
    rows = torch.stack([w64[:, :, list(t)].sum(2) for t in _TAPS], 2)  # (Co, Ci, 4, 3)
    k = torch.stack([rows[..., list(t)].sum(-1) for t in _TAPS], -1)  # (Co, Ci, 4, 4)
    if repeats:  # shortcut phase (a, b) of output channel c is input channel (4c + 2a + b) // r, at tap (1+a, 1+b)
        co = w.shape[0]
        for a in (0, 1):
            for b in (0, 1):
                src = torch.div(torch.arange(co) * 4 + 2 * a + b, repeats, rounding_mode="floor")
                k[torch.arange(co), src, 1 + a, 1 + b] += 1.0
    return k.transpose(0, 1).contiguous().to(w.dtype)


def upsample_conv3x3(conv: nn.Conv2d, x: torch.Tensor, shortcut_repeats: int = 0) -> torch.Tensor:
    """``conv(F.interpolate(x, scale_factor=2, mode="nearest"))`` for a 3×3, stride-1, padding-1 conv.

    Output row 2m+a reads upsampled rows 2m+a-1 … 2m+a+1, i.e. input rows {m-1, m, m} (a = 0) or {m, m, m+1}
    (a = 1): each output phase is a 2×2 conv of the input with summed taps, and the four phases together are one
    stride-2 transposed conv with a 4×4 kernel (oneDNN writes the interleaved output directly).
    With ``shortcut_repeats`` r, the DC-AE up block's shortcut ``pixel_shuffle(x.repeat_interleave(r, dim=1), 2)``
    (phase (a, b) of channel c is input channel (4c + 2a + b) // r) is folded into the kernel as unit taps, so the
    repeated and shuffled full-size tensors are never built.
    """
    k = _cached(conv, f"upsample{shortcut_repeats}", lambda w: _upsample_kernel(w, shortcut_repeats))
    return F.conv_transpose2d(x, k, conv.bias, stride=2, padding=1)  # (B, Co, 2H, 2W)


# Winograd F(4×4, 3×3) (interpolation points 0, ±1, ±2, ∞): the kernel transform G (6×3); the data
# (Bᵀ, 6×6) and output (Aᵀ, 4×6) transforms are written out in _data_transform and _output_transform.
_G = ((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
      (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _winograd_weights(w: torch.Tensor) -> torch.Tensor:
    """U = G g Gᵀ per (Co, Ci) pair, computed in fp64: (Co, Ci, 3, 3) → (36, Ci, Co)."""
    g = torch.tensor(_G, dtype=torch.float64, device=w.device)
    u = torch.einsum("ak,oikl,bl->abio", g, w.double(), g)  # (6, 6, Ci, Co)
    return u.reshape(36, w.shape[1], w.shape[0]).to(w.dtype).contiguous()


def winograd_ok(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    return (policy.fast_convs(x) and conv.in_channels >= WINOGRAD_MIN_CHANNELS
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0)


def _data_transform(r, out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """out[k] = Σ_i Bᵀ[k, i] r[i] for the six equally shaped views r; a, b: scratch of that shape."""
    r0, r1, r2, r3, r4, r5 = r
    torch.add(r4, r2, alpha=-5, out=out[0]).add_(r0, alpha=4)  # 4 r0 − 5 r2 + r4
    torch.add(r5, r3, alpha=-5, out=out[5]).add_(r1, alpha=4)  # 4 r1 − 5 r3 + r5
    torch.add(r4, r2, alpha=-4, out=a)
    torch.add(r3, r1, alpha=-4, out=b)
    torch.add(a, b, out=out[1])  # −4 r1 − 4 r2 + r3 + r4
    torch.sub(a, b, out=out[2])  # 4 r1 − 4 r2 − r3 + r4
    torch.sub(r4, r2, out=a)
    torch.sub(r3, r1, out=b)
    torch.add(a, b, alpha=2, out=out[3])  # −2 r1 − r2 + 2 r3 + r4
    torch.add(a, b, alpha=-2, out=out[4])  # 2 r1 − r2 − 2 r3 + r4


def _output_transform(m, out: torch.Tensor, s: torch.Tensor) -> None:
    """out[k] = Σ_i Aᵀ[k, i] m[i] for the six equally shaped views m; s: scratch (4, *that shape)."""
    m0, m1, m2, m3, m4, m5 = m
    p, q, r, t = s
    torch.add(m1, m2, out=p)
    torch.sub(m1, m2, out=q)
    torch.add(m3, m4, out=r)
    torch.sub(m3, m4, out=t)
    torch.add(m0, p, out=out[0]).add_(r)  # m0 + m1 + m2 + m3 + m4
    torch.add(q, t, alpha=2, out=out[1])  # m1 − m2 + 2 (m3 − m4)
    torch.add(p, r, alpha=4, out=out[2])  # m1 + m2 + 4 (m3 + m4)
    torch.add(q, t, alpha=8, out=out[3]).add_(m5)  # m1 − m2 + 8 (m3 − m4) + m5


def winograd_conv3x3(conv: nn.Conv2d, x: torch.Tensor, silu: bool = False) -> torch.Tensor:
    """``conv(x)`` (then SiLU, with ``silu``) for a 3×3, stride-1, padding-1 conv on H, W divisible by 4, by Winograd
    F(4×4, 3×3): 36 instead of 144 multiplies per 4×4 output tile, as 36 batched matmuls. Channels-last in and out."""
    u = _cached(conv, "winograd", _winograd_weights)  # (36, Ci, Co)
    x = channels_last(x)
    out = torch.empty(x.shape[0], u.shape[2], *x.shape[2:], dtype=x.dtype, memory_format=torch.channels_last)
    for xi, oi in zip(x, out):
        _winograd_one(xi.permute(1, 2, 0), u, conv.bias, silu, oi.permute(1, 2, 0))
    return out


def _winograd_one(x: torch.Tensor, u: torch.Tensor, bias, silu: bool, out: torch.Tensor) -> None:
    """x (H, W, Ci) → out (H, W, Co), both contiguous, in stripes of tile rows whose transforms stay in cache."""
    H, W, C = x.shape
    Co, th, tw = u.shape[2], H // 4, W // 4
    stripe = max(1, min(th, _TILES // (C * tw)))
    pad = x.new_zeros(4 * stripe + 2, W + 2, C)  # the zero-padded input rows of one stripe
    big = max(C, Co) * stripe * tw
    # Four flat buffers, reused by every stripe: d, v, m, p below. The data transforms' scratch lives in m's buffer
    # (m is written after them), the output transforms' scratch in v's (v is read before them).
    bufs = [x.new_empty(n) for n in (6 * stripe * (W + 2) * C, 36 * big, 36 * big, 24 * big)]
    outv = out.view(th, 4, tw, 4, Co)  # (tile row, a, tile column, b, Co)
    for i0 in range(0, th, stripe):
        s = min(stripe, th - i0)
        # Padded row 4·i0 + r (r = 0 … 4s + 1) is input row 4·i0 + r − 1; rows outside the input stay zero.
        lo, hi = 4 * i0 - 1, min(4 * (i0 + s) + 1, H)
        if lo < 0:
            pad[0].zero_()
        pad[max(lo, 0) - lo:hi - lo, 1:W + 1] = x[max(lo, 0):hi]
        if hi - lo < 4 * s + 2:
            pad[hi - lo:4 * s + 2].zero_()
        d, v, m, p = (_view(b, shape) for b, shape in zip(bufs, (
            (6, s, W + 2, C),  # Bᵀ over the rows of each tile
            (6, 6, s, tw, C),  # … and over its columns: v[k, l] = transformed tile element (k, l)
            (36, s * tw, Co),  # the 36 products
            (4, 6, s, tw, Co))))  # Aᵀ over rows
        _data_transform([pad[r:r + 4 * s - 3:4] for r in range(6)], d, *_scratch(bufs[2], 2, d.shape[1:]))
        _data_transform([d[:, :, c:c + 4 * tw - 3:4] for c in range(6)], v.transpose(0, 1),
                        *_scratch(bufs[2], 2, v.shape[1:]))
        torch.bmm(v.view(36, s * tw, C), u, out=m)
        _output_transform(m.view(6, 6, s, tw, Co), p, _scratch(bufs[1], 4, p.shape[1:]))
        o = outv[i0:i0 + s]
        _output_transform(p.unbind(1), o.permute(3, 1, 0, 2, 4), _scratch(bufs[1], 4, (4, s, tw, Co)))
        if bias is not None:
            o.add_(bias)
        if silu:
            F.silu(o, inplace=True)


def _view(flat: torch.Tensor, shape) -> torch.Tensor:
    return flat[:math.prod(shape)].view(shape)


def _scratch(flat: torch.Tensor, count: int, shape) -> torch.Tensor:
    return _view(flat, (count, *shape))


def conv3x3(conv: nn.Conv2d, x: torch.Tensor, silu: bool = False) -> torch.Tensor:
    """``conv(x)`` (then SiLU, with ``silu``), by Winograd where it is faster; on the CPU in fp32 channels-last."""
    if winograd_ok(conv, x):
        return winograd_conv3x3(conv, x, silu)
    y = conv(channels_last(x)) if policy.fast_convs(x) else conv(x)
    return F.silu(y, inplace=True) if silu else y
