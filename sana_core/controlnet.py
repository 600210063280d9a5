"""Sana ControlNet (docs/model.md §8), as diffusers' SanaControlNetModel: its own embedders and a few Sana blocks
read the noisy latent plus the encoded control image; after each block a linear projection gives one sample, which
the transformer adds after its block k + 1 (``SanaTransformer.forward``'s ``control``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import SanaError
from .layers import Operations
from .transformer import SanaTransformer, SanaTrunk, caption_bias


class SanaControlNet(SanaTrunk):
    """Embedders and ``cfg.num_layers`` Sana blocks; ``input_block`` adds the control image's patch tokens,
    ``controlnet_blocks.k`` projects block k's output into sample k."""

    def __init__(self, cfg, device=None, dtype=None, operations=Operations):
        super().__init__(cfg, device, dtype, operations)
        d = cfg.dim
        self.input_block = operations.Linear(d, d, device=device, dtype=dtype)
        self.controlnet_blocks = nn.ModuleList(operations.Linear(d, d, device=device, dtype=dtype)
                                               for _ in range(cfg.num_layers))

    @property
    def dtype(self) -> torch.dtype:
        return self.input_block.weight.dtype

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, control: torch.Tensor,
                context_mask: torch.Tensor | None = None, scale: float = 1.0) -> list[torch.Tensor]:
        """x (B, C, H, W): the transformer's input; control (B, C, H, W): the control image's scaled latent;
        timestep, context, context_mask as the transformer's. → one sample (B, N, D) per block, times ``scale``."""
        p = self.cfg.patch_size
        hw = (x.shape[2] // p, x.shape[3] // p)
        bias = caption_bias(context_mask, x.dtype)
        h = self.tokens(x)
        h = h + self.input_block(self.tokens(control.to(h.dtype)))
        t, _ = self.time_embed(timestep, None, h.dtype)
        y, keys_values = self.caption(context)
        samples = []
        for i, (block, project) in enumerate(zip(self.transformer_blocks, self.controlnet_blocks)):
            h = block(h, y, bias, t, hw, 0, keys_values[i] if keys_values else None)
            samples.append(project(h) * scale)
        return samples


@dataclass(frozen=True)
class Control:
    """A ControlNet with its control image's scaled latent (1 or B, C, h, w) and scale, for ``guided_model_fn``."""
    net: SanaControlNet
    latent: torch.Tensor
    scale: float = 1.0

    def samples(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """The samples for a model call on ``x`` (N, C, h, w): the control latent repeated to N, in the ControlNet's
        dtype; the samples back in ``x``'s dtype."""
        dt = self.net.dtype
        hint = self.latent.to(x.device, dt)
        hint = hint.repeat(-(-x.shape[0] // hint.shape[0]), 1, 1, 1)[:x.shape[0]]
        out = self.net(x.to(dt), t, context.to(dt), hint, context_mask, self.scale)
        return [s.to(x.dtype) for s in out]


def check_pair(controlnet: SanaControlNet, transformer: SanaTransformer, source: str = "the ControlNet") -> None:
    """A ControlNet's samples are added to the transformer's tokens: their widths and depths must fit."""
    a, b = controlnet.cfg, transformer.cfg
    if a.dim != b.dim or a.caption_channels != b.caption_channels:
        raise SanaError(f"{source} has hidden size {a.dim} (caption width {a.caption_channels}); the Sana model it "
                        f"controls has {b.dim} ({b.caption_channels}): use a ControlNet made for this model size")
    if a.num_layers >= b.num_layers:
        raise SanaError(f"{source} has {a.num_layers} blocks; the model has {b.num_layers}, too few to take them")
