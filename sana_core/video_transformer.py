"""SANA-Video transformer (diffusers' ``SanaVideoTransformer3DModel``): config, blocks, model. Reads top to bottom in
diffusers' op order, with diffusers' state-dict names. The embedders, the cross-attention and the per-frame Mix-FFN
are the image model's (``transformer.py``); what is new is the 3-D patch embed, the rotary embedding over (frame,
height, width) inside the linear self-attention, and the temporal convolution after the Mix-FFN."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import caches
from .layers import Operations
from .transformer import CaptionProjection, CrossAttention, MixFFN, Projections, TimeEmbed, TrunkSizes, caption_bias


@dataclass(frozen=True)
class SanaVideoConfig(TrunkSizes):
    """A SANA-Video transformer's sizes and flags; every published model states them in its config.json (the loader
    fills what one leaves out with diffusers' defaults)."""

    num_layers: int
    num_heads: int
    head_dim: int
    cross_heads: int
    cross_head_dim: int
    caption_channels: int
    in_channels: int
    out_channels: int
    mlp_ratio: float
    patch_size: tuple[int, int, int]  # (frames, height, width)
    attention_bias: bool  # q/k/v biases of the self-attention
    qk_norm: bool  # "rms_norm_across_heads"
    guidance_embeds: bool
    norm_eps: float
    rope_max_seq_len: int  # the most patches along any one axis
    sample_size: int
    guidance_embeds_scale: float
    flow_shift: float = 8.0  # the scheduler's, from a repo's scheduler_config.json (8.0 in the published ones)

    @property
    def resolution(self) -> int | None:
        """The training resolution a sample_size stands for (diffusers' bin tables: 30 → 480p, 22 → 720p)."""
        return {30: 480, 22: 720}.get(self.sample_size)


# --- rotary embedding ----------------------------------------------------------------------------------------------

def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """The head-dim split over (frame, height, width): height and width get 2⌊d/6⌋ each, frames the rest."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_tables(head_dim: int, grid: tuple[int, int, int], theta: float = 10000.0,
                device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (N, d/2) fp32 for the tokens of an (F, H, W) patch grid in row-major order: each pair of head
    channels turns by its frame, row or column angle. Angles in fp64, as diffusers computes them."""
    parts_cos, parts_sin = [], []
    for axis, (dim, n) in enumerate(zip(rope_axes(head_dim), grid, strict=True)):
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim))  # (dim/2,)
        angles = torch.outer(torch.arange(n, dtype=torch.float64, device=device), freqs)  # (n, dim/2)
        shape = [1, 1, 1, dim // 2]
        shape[axis] = n
        parts_cos.append(angles.cos().float().view(shape).expand(*grid, -1))
        parts_sin.append(angles.sin().float().view(shape).expand(*grid, -1))
    return torch.cat(parts_cos, -1).flatten(0, 2), torch.cat(parts_sin, -1).flatten(0, 2)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, N, h, d) with channel pairs (2i, 2i+1) turned by the angles of cos, sin (N, d/2)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)  # (B, N, h, d/2) each
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)  # (N, 1, d/2)
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


# --- blocks --------------------------------------------------------------------------------------------------------

class RotaryLinearAttention(Projections):
    """attn1: ReLU linear attention with the rotary embedding on the ReLU'd queries and keys of the numerator; the
    normaliser uses them unrotated. The products run in fp32, the normaliser in the input dtype."""

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, N, D); rope: cos, sin (N, d/2) → (B, N, D)."""
        dtype = x.dtype
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        if self.norm_q is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        q = F.relu(q.unflatten(2, (self.heads, -1)))  # (B, N, h, d)
        k = F.relu(k.unflatten(2, (self.heads, -1)))
        v = v.unflatten(2, (self.heads, -1))
        q_rot, k_rot = rotate(q, *rope), rotate(k, *rope)
        q, k = q.permute(0, 2, 3, 1), k.permute(0, 2, 3, 1)  # (B, h, d, N)
        q_rot, k_rot = q_rot.permute(0, 2, 3, 1).float(), k_rot.permute(0, 2, 3, 1).float()
        v = v.permute(0, 2, 3, 1).float()
        z = 1 / (k.sum(dim=-1, keepdim=True).transpose(-2, -1) @ q + 1e-15)  # (B, h, 1, N)
        o = torch.matmul(torch.matmul(v, k_rot.transpose(-1, -2)), q_rot)  # (d×d)·(d×N), in this order for parity
        o = (o * z).flatten(1, 2).transpose(1, 2).to(dtype)  # (B, N, D)
        return self.to_out[0](o)


class TemporalMixFFN(MixFFN):
    """Mix-FFN on each frame, then a residual temporal conv over frames (diffusers' GLUMBTempConv): ``conv_temp``
    is a (3, 1) conv over (frames, tokens of a frame)."""

    def __init__(self, dim: int, hidden: int, device=None, dtype=None, operations=Operations):
        super().__init__(dim, hidden, device, dtype, operations)
        self.conv_temp = operations.Conv2d(dim, dim, (3, 1), padding=(1, 0), bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, F, H, W, D) → (B, N, D)."""
        b, f, h, w, d = x.shape
        x = super().forward(x.reshape(b * f, h, w, d).permute(0, 3, 1, 2))  # (B·F, D, H, W)
        x = x.view(b, f, d, h * w).permute(0, 2, 1, 3)  # (B, D, F, H·W)
        x = x + self.conv_temp(x)
        return x.permute(0, 2, 3, 1).reshape(b, f * h * w, d)


class SanaVideoBlock(nn.Module):
    """Rotary linear self-attention, cross-attention to the caption, temporal Mix-FFN; AdaLN-single modulation and
    gates, per sample or per token."""

    def __init__(self, cfg: SanaVideoConfig, device=None, dtype=None, operations=Operations):
        super().__init__()
        d = cfg.dim
        self.eps = cfg.norm_eps
        self.attn1 = RotaryLinearAttention(d, cfg.num_heads, cfg.qk_norm, cfg.attention_bias, device, dtype,
                                           operations)
        self.attn2 = CrossAttention(d, cfg.cross_heads, cfg.qk_norm, device, dtype, operations)
        self.ff = TemporalMixFFN(d, cfg.mlp_hidden, device, dtype, operations)
        self.scale_shift_table = nn.Parameter(torch.empty(6, d, device=device, dtype=dtype))

    def modulation(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """t (B, T, 6D), T = 1 or N → shift, scale, gate of the attention, then of the FFN: each (B, T, D)."""
        table = self.scale_shift_table.to(t.device)
        return (table[None, None] + t.unflatten(2, (6, -1))).unbind(dim=2)

    def forward(self, h: torch.Tensor, y: torch.Tensor | None, bias: torch.Tensor | None, t: torch.Tensor,
                grid: tuple[int, int, int], rope: tuple[torch.Tensor, torch.Tensor],
                keys_values: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """h (B, N, D) tokens of an (F, H, W) grid; y (B, L, D) caption features, or this block's cross-attention
        ``keys_values`` computed before; t (B, T, 6D)."""
        d = h.shape[-1]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(t)
        n = F.layer_norm(h, (d,), eps=self.eps) * (1 + scale_msa) + shift_msa
        h = h + gate_msa * self.attn1(n.to(h.dtype), rope)
        h = self.attn2(h, y, bias, keys_values) + h
        n = F.layer_norm(h, (d,), eps=self.eps) * (1 + scale_mlp) + shift_mlp
        return h + gate_mlp * self.ff(n.unflatten(1, grid))  # the FFN takes (B, F, H, W, D)


# --- the model -----------------------------------------------------------------------------------------------------

class SanaVideoTransformer(nn.Module):
    """Predicts the flow velocity v for video latents (B, C, F, H, W) given caption features (B, L, 2304). Every
    layer is built from ``operations`` (``layers.py``); the patch embed takes its ``Conv3d``, else torch's."""

    def __init__(self, cfg: SanaVideoConfig, device=None, dtype=None, operations=Operations):
        super().__init__()
        if cfg.cross_heads * cfg.cross_head_dim != cfg.dim:
            raise ValueError(f"cross-attention width {cfg.cross_heads}×{cfg.cross_head_dim} must equal the hidden "
                             f"size {cfg.dim}")
        self.cfg = cfg
        self.operations = operations
        d = cfg.dim
        conv3d = getattr(operations, "Conv3d", nn.Conv3d)
        self.patch_embedding = conv3d(cfg.in_channels, d, cfg.patch_size, stride=cfg.patch_size, device=device,
                                      dtype=dtype)
        self.time_embed = TimeEmbed(d, cfg.guidance_embeds, device, dtype, operations)
        self.caption_projection = CaptionProjection(cfg.caption_channels, d, device, dtype, operations)
        self.caption_norm = operations.RMSNorm(d, 1e-5, device=device, dtype=dtype)
        self.transformer_blocks = nn.ModuleList(SanaVideoBlock(cfg, device, dtype, operations)
                                                for _ in range(cfg.num_layers))
        self.scale_shift_table = nn.Parameter(torch.empty(2, d, device=device, dtype=dtype))
        self.proj_out = operations.Linear(d, math.prod(cfg.patch_size) * cfg.out_channels, device=device,
                                          dtype=dtype)

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.scale_shift_table.dtype

    def rope(self, grid: tuple[int, int, int], device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (N, d/2) fp32 of an (F, H, W) patch grid, kept per grid and device."""
        if max(grid) > self.cfg.rope_max_seq_len:
            raise ValueError(f"patch grid {grid} exceeds the rotary embedding's {self.cfg.rope_max_seq_len} "
                             "positions per axis")
        kept = caches.kept(self, "rope", dict)
        key = (*grid, str(device))
        if key not in kept:
            kept[key] = rope_tables(self.cfg.head_dim, grid, device=device)
        return kept[key]

    def caption_features(self, context: torch.Tensor) -> torch.Tensor:
        """(B, L, Cc) caption-encoder features → (B, L, D), the cross-attention's input in every block."""
        return self.caption_norm(self.caption_projection(context).view(context.shape[0], -1, self.cfg.dim))

    def caption(self, context: torch.Tensor) -> tuple[torch.Tensor | None, list | None]:
        """What the blocks attend to: (the caption features, None). The speed layer may instead give (None, each
        block's cross-attention keys and values computed before)."""
        return self.caption_features(context), None

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None, guidance: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, F, H, W) in the model dtype; context (B, L, Cc) with context_mask (B, L) of 0/1; guidance (B,)
        when the model has a guidance embedder.

        ``timestep``: (B,), or one per patch token: B·N values in token order (frame, row, column), e.g.
        (B, 1, F', H', W') as diffusers' image-to-video pipeline gives it (t·(1 − mask), 0 on the start frame), or
        (B, N). Each token is then modulated by its own timestep, the output norm too. Returns (B, C_out, F, H, W).
        """
        cfg = self.cfg
        b, _, ff, hh, ww = x.shape
        pt, ph, pw = cfg.patch_size
        grid = (ff // pt, hh // ph, ww // pw)
        n = math.prod(grid)
        if timestep.numel() not in (b, b * n):
            raise ValueError(f"timestep {tuple(timestep.shape)}: expected {b} values (one per sample) or {b * n} "
                             f"(one per patch token of a {grid} grid)")
        bias = caption_bias(context_mask, x.dtype)
        rope = self.rope(grid, x.device)

        h = self.patch_embedding(x).flatten(2).transpose(1, 2)  # (B, N, D), tokens in (frame, row, column) order
        t, e = self.time_embed(timestep.flatten(), guidance, h.dtype)  # (B·T, 6D), (B·T, D)
        t, e = t.view(b, -1, t.shape[-1]), e.view(b, -1, e.shape[-1])  # (B, T, ·), T = 1 or N
        y, keys_values = self.caption(context)  # (B, L, D) features, or each block's keys and values

        for i, block in enumerate(self.transformer_blocks):
            h = block(h, y, bias, t, grid, rope, keys_values[i] if keys_values else None)

        shift, scale = (self.scale_shift_table.to(e.device)[None, None] + e[:, :, None]).unbind(dim=2)  # (B, T, D)
        h = F.layer_norm(h, (h.shape[-1],), eps=1e-6) * (1 + scale) + shift
        h = self.proj_out(h)  # (B, N, pt·ph·pw·C)
        h = h.reshape(b, *grid, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)  # (B, C, F', pt, H', ph, W', pw)
        return h.reshape(b, -1, grid[0] * pt, grid[1] * ph, grid[2] * pw)
