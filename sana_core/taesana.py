"""TAESANA: the tiny f32c32 decoder (madebyollin/taesd's F32 variant) for high-quality live previews.

Layout follows the published ``taesana_decoder.pth`` (an ``nn.Sequential`` state dict, keys like ``3.conv.0.weight``).
Input: the scaled DC-AE latent the sampler works in; output: an image in [0, 1]. ``load/taesana.py`` loads it.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(n_in: int, n_out: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kw)


class _Clamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


def taesana_decoder(latent_channels: int = 32) -> nn.Sequential:
    """32 latent channels → RGB, five ×2 upsamplings (256 → 128 → 64 → 64 → 64 → 64 wide)."""
    layers: list[nn.Module] = [_Clamp(), _conv(latent_channels, 256), nn.ReLU()]
    widths = [(256, 128), (128, 64), (64, 64), (64, 64), (64, 64)]
    for w_in, w_out in widths:
        layers += [_Block(w_in, w_in), _Block(w_in, w_in), _Block(w_in, w_in), nn.Upsample(scale_factor=2),
                   _conv(w_in, w_out, bias=False)]
    layers += [_Block(64, 64), _conv(64, 3)]
    return nn.Sequential(*layers)
