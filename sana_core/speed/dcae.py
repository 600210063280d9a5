"""Faster CPU forms of the DC-AE blocks (the reference is ``sana_core/dcae_blocks.py``); ``speed.apply`` installs
them. They run on the CPU in fp32 (``policy.fast_convs``); elsewhere each falls back to the reference forward.

- The ResBlock stages run channels-last: oneDNN's direct and transposed convs are faster in that layout, and the
  channel norms reduce along the contiguous dim. The encoder converts its input once; both ends return plain NCHW.
- 3×3 convs of wide ResBlocks use Winograd F(4×4, 3×3) with the bias and SiLU applied in cache (``conv.py``).
- Each up block's nearest-2× upsample + 3×3 conv + shortcut is one stride-2 transposed conv (``conv.py``).
- The down block's unshuffle-and-average shortcut sums strided views instead of building the unshuffled tensor.
- Norms, activations and residuals run in place over tensors the block owns.
Same function as the reference to fp32 rounding (Winograd: ~1e-5 of the largest output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..dcae_blocks import (
    DCDownBlock2d,
    DCUpBlock2d,
    Decoder,
    Encoder,
    MixFFNBlock,
    MultiscaleLinearAttention,
    ResBlock,
    RMSNorm,
)
from ..layers import casts_per_call
from . import policy
from .conv import channels_last, conv3x3, upsample_conv3x3


def _sum_squares_channels(h: torch.Tensor) -> torch.Tensor:
    """Σ_c h² of (B, C, H, W) → (B, 1, H, W). Channels-last: one reduction over the contiguous dim. NCHW: in column
    blocks of ~1 M elements, which stay in cache (one reduction across the C planes would not)."""
    b, c, hh, ww = h.shape
    if not h.is_contiguous():
        return torch.linalg.vector_norm(h, 2, dim=1, keepdim=True).square_()
    out = h.new_empty(b, 1, hh, ww)
    cols = max(1, 2**20 // c)
    for hb, ob in zip(h.view(b, c, -1), out.view(b, -1)):  # (C, HW), (HW,)
        for s in range(0, hb.shape[1], cols):
            blk = hb[:, s:s + cols]
            torch.sum(blk * blk, 0, out=ob[s:s + cols])
    return out


def norm_residual_(norm: RMSNorm, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``norm_channels(norm, h) + x`` in place over h, a tensor the caller owns: one reduction and three passes
    instead of six fresh full-size tensors (same function to rounding)."""
    scale = _sum_squares_channels(h)  # (B, 1, H, W)
    scale.div_(h.shape[1]).add_(norm.eps).rsqrt_()
    h.mul_(scale)
    torch.addcmul(norm.bias[:, None, None], h, norm.weight[:, None, None], out=h)
    return h.add_(x)


def _runs(block: nn.Module, x: torch.Tensor) -> bool:
    """Whether a block's CPU form runs: fp32 on the CPU, with weights the block may read itself (not a host's
    per-call casts)."""
    return policy.fast_convs(x) and not casts_per_call(block)


class FastResBlock(ResBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _runs(self, x):
            return super().forward(x)
        silu = isinstance(self.nonlinearity, nn.SiLU)  # channels-last, Winograd where it pays, SiLU applied in cache
        h = conv3x3(self.conv1, x, silu=silu)
        h = conv3x3(self.conv2, h if silu else self.nonlinearity(h))
        return norm_residual_(self.norm, h, x)


class FastMultiscaleLinearAttention(MultiscaleLinearAttention):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _runs(self, x):
            return super().forward(x)
        return norm_residual_(self.norm_out, self.attend(x), x)


class FastMixFFNBlock(MixFFNBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _runs(self, x):
            return super().forward(x)
        h = self.conv_depth(F.silu(self.conv_inverted(x), inplace=True))  # (B, 8C, H, W)
        h, gate = torch.chunk(h, 2, dim=1)  # (B, 4C, H, W) each
        h = self.conv_point(h.mul_(F.silu(gate, inplace=True)))
        return norm_residual_(self.norm, h, x)


def _add_unshuffle_mean(h: torch.Tensor, x: torch.Tensor, g: int) -> torch.Tensor:
    """``h + pixel_unshuffle(x, 2).unflatten(1, (-1, g)).mean(2)`` for channels-last h and x, in place over h (the
    caller's own tensor): the group means are sums over strided views, with no unshuffled copy."""
    b, c, hh, ww = x.shape
    x6 = x.permute(0, 2, 3, 1).view(b, hh // 2, 2, ww // 2, 2, c)  # (B, i, a, j, b, C): unshuffled channel 4c + 2a + b
    t = h.permute(0, 2, 3, 1)  # (B, i, j, C_out)
    if g == 1:
        t.view(b, hh // 2, ww // 2, c, 2, 2).add_(x6.permute(0, 1, 3, 5, 2, 4))
    elif g == 2:  # output channel 2c + a: the mean over b
        t.view(b, hh // 2, ww // 2, c, 2).add_(x6.sum(4).permute(0, 1, 3, 4, 2), alpha=0.5)
    else:  # g = 4n: output channel j: the mean over a, b and input channels nj … nj + n − 1
        t.add_(x6.view(b, hh // 2, 2, ww // 2, 2, c * 4 // g, g // 4).sum((2, 4, 6)), alpha=1 / g)
    return h


def _channels_last(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=torch.channels_last)


class FastDCDownBlock2d(DCDownBlock2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.group_size
        if self.pixel_unshuffle or not policy.fast_convs(x) or not _channels_last(x) or not (g in (1, 2) or g % 4 == 0):
            return super().forward(x)
        h = self.conv(x)
        return _add_unshuffle_mean(h, x, g) if _channels_last(h) else h + self.shortcut(x)


class FastDCUpBlock2d(DCUpBlock2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.interpolate and _runs(self, x)):
            return super().forward(x)
        return upsample_conv3x3(self.conv, channels_last(x), self.repeats)  # the ResBlocks that follow keep it


class FastEncoder(Encoder):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not policy.fast_convs(x):
            return super().forward(x)
        return super().forward(channels_last(x)).contiguous()  # the ResBlock stages run channels-last


class FastDecoder(Decoder):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = super().forward(z)
        return out.contiguous() if policy.fast_convs(z) else out  # the blocks leave channels-last strides


FORMS = {ResBlock: FastResBlock, MultiscaleLinearAttention: FastMultiscaleLinearAttention, MixFFNBlock: FastMixFFNBlock,
         DCDownBlock2d: FastDCDownBlock2d, DCUpBlock2d: FastDCUpBlock2d, Encoder: FastEncoder, Decoder: FastDecoder}
