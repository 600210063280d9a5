"""Fewer-FLOP forms of the DC-AE's two costliest convolutions, for CPUs (issue 6).

oneDNN already runs a plain 3×3 convolution at the matmul roofline here, so the only way past diffusers is to do less
arithmetic. Both forms give the same function as the plain op up to fp32 rounding (the tests pin ≤ 1e-5 relative):

- ``upsample_conv3x3``: nearest 2× upsampling followed by a 3×3 conv equals, for each of the four output phases, a
  2×2 conv on the low-resolution input with summed taps, i.e. one stride-2 transposed conv with a 4×4 kernel; 16
  instead of 36 multiply-adds per input pixel and channel pair (2.25× fewer), and the upsampled tensor is never
  built.
- ``winograd_conv3x3``: Winograd F(2×2, 3×3) (Lavin & Gray 2015): 16 instead of 36 multiplies per 2×2 output tile,
  as 16 batched matmuls. It only pays where those matmuls are large enough to run near the roofline, which on this
  MKL build means C_in ≥ 256; the 128-channel stage keeps oneDNN's direct conv.

The derived weights are cached on the module (not in its state dict), keyed by the weight tensor's identity and
version, so a reload or an in-place edit recomputes them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WINOGRAD_MIN_CHANNELS = 256
_TILES = 2**17  # C_in × tiles per Winograd step (≈ 8 MB of transformed tiles): measured best here

# Winograd F(2×2, 3×3) kernel transform G (4×3); the data (Bᵀ) and output (Aᵀ) transforms are written out below.
_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def use_fast(x: torch.Tensor) -> bool:
    """CPU fp32/fp64 only: on a GPU cuDNN picks its own algorithms, and bf16 keeps diffusers' exact rounding."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def _cached(conv: nn.Conv2d, kind: str, make) -> torch.Tensor:
    w = conv.weight
    version = 0 if w.is_inference() else w._version  # weights made under inference_mode (ComfyUI) have no counter
    key = (kind, w.data_ptr(), version, w.dtype, w.device)
    cache = conv.__dict__.setdefault("_sana_fast", {})
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


def _winograd_weights(w: torch.Tensor) -> torch.Tensor:
    """U = G g Gᵀ per (Co, Ci) pair, computed in fp64: (Co, Ci, 3, 3) → (16, Co, Ci)."""
    g = torch.tensor(_G, dtype=torch.float64, device=w.device)
    u = torch.einsum("ak,oikl,bl->aboi", g, w.double(), g)  # (4, 4, Co, Ci)
    return u.reshape(16, w.shape[0], w.shape[1]).to(w.dtype).contiguous()


def winograd_ok(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    return (use_fast(x) and conv.in_channels >= WINOGRAD_MIN_CHANNELS
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0)


def winograd_conv3x3(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a 3×3, stride-1, padding-1 conv on even H, W, by Winograd F(2×2, 3×3)."""
    u = _cached(conv, "winograd", _winograd_weights)  # (16, Co, Ci)
    y = torch.stack([_winograd_one(xi, u) for xi in x]) if len(x) > 1 else _winograd_one(x[0], u)[None]
    return y if conv.bias is None else y.add_(conv.bias[:, None, None])


def _winograd_one(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    C, H, W = x.shape
    Co, th, tw = u.shape[1], H // 2, W // 2
    # The zero-padded input, split by row and column parity so that every tile gather is a plain slice:
    # e[p, q, :, i, j] = padded[:, 2i+p, 2j+q]; padded row r is input row r-1.
    e = x.new_empty(2, 2, C, th + 1, tw + 1)
    e[0, :, :, 0] = 0  # padded row 0
    e[1, :, :, th] = 0  # padded row H+1
    e[:, 0, :, :, 0] = 0  # padded column 0
    e[:, 1, :, :, tw] = 0  # padded column W+1
    xv = x.view(C, th, 2, tw, 2)
    e[0, 0, :, 1:, 1:] = xv[:, :, 1, :, 1]
    e[0, 1, :, 1:, :tw] = xv[:, :, 1, :, 0]
    e[1, 0, :, :th, 1:] = xv[:, :, 0, :, 1]
    e[1, 1, :, :th, :tw] = xv[:, :, 0, :, 0]
    out = x.new_empty(2, 2, Co, th, tw)  # out[a, b, :, i, j] = y[:, 2i+a, 2j+b]
    stripe = max(1, _TILES // (C * tw))
    for i0 in range(0, th, stripe):
        s = min(stripe, th - i0)
        # Tile rows 0..3 of tile row i are padded rows 2i, 2i+1, 2i+2, 2i+3: each (2 col parities, C, s, tw+1).
        r0, r1 = e[0, :, :, i0:i0 + s], e[1, :, :, i0:i0 + s]
        r2, r3 = e[0, :, :, i0 + 1:i0 + 1 + s], e[1, :, :, i0 + 1:i0 + 1 + s]
        d = x.new_empty(4, 2, C, s, tw + 1)  # Bᵀ applied over rows
        torch.sub(r0, r2, out=d[0])
        torch.add(r1, r2, out=d[1])
        torch.sub(r2, r1, out=d[2])
        torch.sub(r1, r3, out=d[3])
        c0, c1, c2, c3 = d[:, 0, ..., :tw], d[:, 1, ..., :tw], d[:, 0, ..., 1:], d[:, 1, ..., 1:]
        v = x.new_empty(4, 4, C, s, tw)  # … and over columns
        torch.sub(c0, c2, out=v[:, 0])
        torch.add(c1, c2, out=v[:, 1])
        torch.sub(c2, c1, out=v[:, 2])
        torch.sub(c1, c3, out=v[:, 3])
        m = torch.bmm(u, v.view(16, C, s * tw)).view(4, 4, Co, s, tw)
        p = x.new_empty(2, 4, Co, s, tw)  # Aᵀ over rows
        torch.add(m[0], m[1], out=p[0]).add_(m[2])
        torch.sub(m[1], m[2], out=p[1]).sub_(m[3])
        o = out[:, :, :, i0:i0 + s]  # … and over columns
        torch.add(p[:, 0], p[:, 1], out=o[:, 0]).add_(p[:, 2])
        torch.sub(p[:, 1], p[:, 2], out=o[:, 1]).sub_(p[:, 3])
    return out.permute(2, 3, 0, 4, 1).reshape(Co, H, W)  # (Co, th, a, tw, b) → (Co, H, W)


def conv3x3(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)``, by Winograd where it is faster."""
    return winograd_conv3x3(conv, x) if winograd_ok(conv, x) else conv(x)
