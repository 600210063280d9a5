"""Sana Linear DiT (docs/model.md §1): config, blocks, model. Reads top to bottom in diffusers' op order, with
diffusers' state-dict names. Faster forms of these blocks live in ``speed/`` (docs/architecture.md)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import caches
from .latent import SANA
from .layers import Operations


class TrunkSizes:
    """What a config's heads and MLP ratio give (the image and the video configs share it)."""

    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_ratio * self.dim)

    def replace(self, **kw):
        return replace(self, **kw)


@dataclass(frozen=True)
class SanaConfig(TrunkSizes):
    num_layers: int = 28
    num_heads: int = 36
    head_dim: int = 32
    cross_heads: int = 16
    cross_head_dim: int = 72
    caption_channels: int = 2304
    in_channels: int = 32
    out_channels: int = 32
    mlp_ratio: float = 2.5
    patch_size: int = 1
    sample_size: int = 32  # training resolution / 32: picks the PE base and the bin table
    interpolation_scale: float | None = None  # None = no positional embedding (512/1024 px models)
    qk_norm: bool = False  # "rms_norm_across_heads" (Sana 1.5, Sprint)
    guidance_embeds: bool = False  # Sprint
    norm_eps: float = 1e-6
    guidance_embeds_scale: float = 0.1
    timestep_scale: float = 1.0
    flow_shift: float = 3.0  # scheduler default for this model (6.0 for 4K)

    @property
    def resolution(self) -> int:
        return self.sample_size * SANA.compression  # sample_size counts latent cells


_600M = SanaConfig(num_layers=28, num_heads=36, cross_heads=16, cross_head_dim=72)
_1600M = SanaConfig(num_layers=20, num_heads=70, cross_heads=20, cross_head_dim=112)

# Published variants (docs/model.md §1.2). MultiLing and BF16 releases share their base config.
PRESETS: dict[str, SanaConfig] = {
    "Sana_600M_512px": _600M.replace(sample_size=16),
    "Sana_600M_1024px": _600M,
    "Sana_1600M_512px": _1600M.replace(sample_size=16),
    "Sana_1600M_1024px": _1600M,
    "Sana_1600M_2Kpx": _1600M.replace(sample_size=64, interpolation_scale=1.0),
    "Sana_1600M_4Kpx": _1600M.replace(sample_size=128, interpolation_scale=2.0, flow_shift=6.0),
    "SANA1.5_1.6B_1024px": _1600M.replace(qk_norm=True),
    "SANA1.5_4.8B_1024px": _1600M.replace(num_layers=60, qk_norm=True),
    "Sana_Sprint_0.6B_1024px": _600M.replace(qk_norm=True, guidance_embeds=True),
    "Sana_Sprint_1.6B_1024px": _1600M.replace(qk_norm=True, guidance_embeds=True),
}
# The diffusers converter's sample size → PE scale map (None = no PE); 4K also shifts more.
INTERPOLATION_SCALE = {16: None, 32: None, 64: 1.0, 128: 2.0}
DEFAULT_FLOW_SHIFT = {128: 6.0}


def timestep_sinusoid(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """(B,) → (B, dim) fp32, cos first (flip_sin_to_cos, shift 0)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    arg = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


def sincos_pos_embed(dim: int, h: int, w: int, base: int, scale: float, device) -> torch.Tensor:
    """(1, h·w, dim) fp32 2-D sin-cos PE; first half encodes the column, second the row (docs/model.md §1.3.2)."""
    ys = torch.arange(h, dtype=torch.float32, device=device) / (h / base) / scale
    xs = torch.arange(w, dtype=torch.float32, device=device) / (w / base) / scale
    omega = torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim / 4.0)
    omega = 1.0 / 10000**omega  # (dim/4,)

    def emb(pos: torch.Tensor) -> torch.Tensor:  # (h·w,) → (h·w, dim/2)
        out = torch.outer(pos, omega)
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    gx = xs[None, :].expand(h, w).reshape(-1)
    gy = ys[:, None].expand(h, w).reshape(-1)
    return torch.cat([emb(gx), emb(gy)], dim=1).float()[None]


class MLPEmbedder(nn.Module):
    """256 → D → D with SiLU (diffusers TimestepEmbedding: linear_1, linear_2)."""

    def __init__(self, dim: int, device=None, dtype=None, operations=Operations):
        super().__init__()
        self.linear_1 = operations.Linear(256, dim, device=device, dtype=dtype)
        self.linear_2 = operations.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class _Emb(nn.Module):  # holds `timestep_embedder` under the `time_embed.emb.` prefix of AdaLN-single
    def __init__(self, dim: int, device=None, dtype=None, operations=Operations):
        super().__init__()
        self.timestep_embedder = MLPEmbedder(dim, device, dtype, operations)


class TimeEmbed(nn.Module):
    """AdaLN-single (or Sprint's timestep + guidance embedders) → (T (B, 6D), E (B, D))."""

    def __init__(self, dim: int, guidance: bool, device=None, dtype=None, operations=Operations):
        super().__init__()
        if guidance:
            self.timestep_embedder = MLPEmbedder(dim, device, dtype, operations)
            self.guidance_embedder = MLPEmbedder(dim, device, dtype, operations)
        else:
            self.emb = _Emb(dim, device, dtype, operations)
        self.linear = operations.Linear(dim, 6 * dim, device=device, dtype=dtype)

    def forward(self, t: torch.Tensor, guidance: torch.Tensor | None, dtype: torch.dtype):
        if hasattr(self, "guidance_embedder"):
            if guidance is None:
                raise ValueError("this Sana Sprint model needs a guidance value per sample")
            e = self.timestep_embedder(timestep_sinusoid(t).to(dtype))
            e = e + self.guidance_embedder(timestep_sinusoid(guidance).to(dtype))
        else:
            e = self.emb.timestep_embedder(timestep_sinusoid(t).to(dtype))
        return self.linear(F.silu(e)), e


class CaptionProjection(nn.Module):
    def __init__(self, in_dim: int, dim: int, device=None, dtype=None, operations=Operations):
        super().__init__()
        self.linear_1 = operations.Linear(in_dim, dim, device=device, dtype=dtype)
        self.linear_2 = operations.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(y), approximate="tanh"))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: SanaConfig, device=None, dtype=None, operations=Operations):
        super().__init__()
        p = cfg.patch_size
        self.proj = operations.Conv2d(cfg.in_channels, cfg.dim, p, stride=p, device=device, dtype=dtype)


class Projections(nn.Module):
    """The q, k, v and output projections of an attention, with RMS qk-norm when the variant has it."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, qkv_bias: bool, device=None, dtype=None,
                 operations=Operations):
        super().__init__()
        self.heads = heads
        self.to_q = operations.Linear(dim, dim, bias=qkv_bias, device=device, dtype=dtype)
        self.to_k = operations.Linear(dim, dim, bias=qkv_bias, device=device, dtype=dtype)
        self.to_v = operations.Linear(dim, dim, bias=qkv_bias, device=device, dtype=dtype)
        self.to_out = nn.ModuleList([operations.Linear(dim, dim, device=device, dtype=dtype)])
        if qk_norm:
            self.norm_q = operations.RMSNorm(dim, 1e-5, device=device, dtype=dtype)
            self.norm_k = operations.RMSNorm(dim, 1e-5, device=device, dtype=dtype)
        else:
            self.norm_q = self.norm_k = None


class LinearAttention(Projections):
    """attn1: ReLU linear attention, accumulated in fp32 (safe in fp16/bf16)."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, device=None, dtype=None, operations=Operations):
        super().__init__(dim, heads, qk_norm, False, device, dtype, operations)

    def forward(self, x: torch.Tensor, n_identity: int = 0) -> torch.Tensor:
        """x (B, N, D). The last ``n_identity`` batch items get identity attention (PAG's perturbed chunk)."""
        if n_identity:
            keep = x.shape[0] - n_identity
            ident = self._out(self.to_v(x[keep:]))  # each token attends only to itself
            return ident if keep == 0 else torch.cat([self.forward(x[:keep]), ident])
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        if self.norm_q is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        return self._out(self.attend(q, k, v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(B, N, D) each → (B, N, D) in v's dtype: softmax-free attention ReLU(q)·(ReLU(k)ᵀ·v), normalised."""
        q = F.relu(q.transpose(1, 2).unflatten(1, (self.heads, -1))).float()  # (B, h, d, N)
        k = F.relu(k.transpose(1, 2).unflatten(1, (self.heads, -1)).transpose(2, 3)).float()  # (B, h, N, d)
        dtype = v.dtype
        v = v.transpose(1, 2).unflatten(1, (self.heads, -1)).float()  # (B, h, d, N)
        v = F.pad(v, (0, 0, 0, 1), value=1.0)  # (B, h, d+1, N): the ones row yields the normaliser
        o = torch.matmul(torch.matmul(v, k), q)  # ((d+1)×d)·(d×N), in this order for parity
        o = o[:, :, :-1] / (o[:, :, -1:] + 1e-15)  # (B, h, d, N)
        return o.flatten(1, 2).transpose(1, 2).to(dtype)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_out[0](x)
        return x.clip(-65504, 65504) if x.dtype == torch.float16 else x


class CrossAttention(Projections):
    """attn2: softmax attention over the caption with an additive mask bias (B, 1, L)."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, device=None, dtype=None, operations=Operations):
        super().__init__(dim, heads, qk_norm, True, device, dtype, operations)

    def keys_values(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The caption's keys and values (B, h, L, d): they depend on the caption only, not on the latent."""
        b = y.shape[0]
        k, v = self.to_k(y), self.to_v(y)
        if self.norm_k is not None:
            k = self.norm_k(k)
        k = k.view(b, -1, self.heads, k.shape[-1] // self.heads).transpose(1, 2)  # (B, h, L, d)
        v = v.view(b, -1, self.heads, v.shape[-1] // self.heads).transpose(1, 2)
        return k, v

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, bias: torch.Tensor | None,
                keys_values: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, N, D) attends to the caption features y (B, L, D), or to ``keys_values`` when given (this layer's
        ``keys_values(y)``, computed before)."""
        b = x.shape[0]
        q = self.to_q(x)
        if self.norm_q is not None:
            q = self.norm_q(q)
        k, v = keys_values if keys_values is not None else self.keys_values(y)
        q = q.view(b, -1, self.heads, q.shape[-1] // self.heads).transpose(1, 2)  # (B, h, N, d)
        mask = None if bias is None else bias[:, None]  # (B, 1, 1, L)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[3]).to(q.dtype)
        return self.to_out[0](o)


class MixFFN(nn.Module):
    """Mix-FFN (diffusers' GLUMBConv): 1×1 conv D→2H, SiLU, depthwise 3×3, value·SiLU(gate), 1×1 conv H→D; on
    (B, D, H, W)."""

    def __init__(self, dim: int, hidden: int, device=None, dtype=None, operations=Operations):
        super().__init__()
        self.conv_inverted = operations.Conv2d(dim, hidden * 2, 1, device=device, dtype=dtype)
        self.conv_depth = operations.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, device=device,
                                            dtype=dtype)
        self.conv_point = operations.Conv2d(hidden, dim, 1, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, H, W)
        x = self.conv_depth(F.silu(self.conv_inverted(x)))
        x, gate = x.chunk(2, dim=1)
        return self.conv_point(x * F.silu(gate))


class SanaBlock(nn.Module):
    """Linear self-attention, cross-attention to the caption, Mix-FFN; AdaLN-single modulation and gates."""

    def __init__(self, cfg: SanaConfig, device=None, dtype=None, operations=Operations):
        super().__init__()
        d = cfg.dim
        self.eps = cfg.norm_eps
        self.attn1 = LinearAttention(d, cfg.num_heads, cfg.qk_norm, device, dtype, operations)
        self.attn2 = CrossAttention(d, cfg.cross_heads, cfg.qk_norm, device, dtype, operations)
        self.ff = MixFFN(d, cfg.mlp_hidden, device, dtype, operations)
        self.scale_shift_table = nn.Parameter(torch.empty(6, d, device=device, dtype=dtype))

    def modulation(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """t (B, 6D) → shift, scale, gate of the attention, then of the FFN: each (B, 1, D)."""
        table = self.scale_shift_table.to(t.device)  # a table outside any layer may be kept off the device
        return (table[None] + t.reshape(t.shape[0], 6, -1)).chunk(6, dim=1)

    def forward(self, h: torch.Tensor, y: torch.Tensor | None, bias: torch.Tensor | None, t: torch.Tensor,
                hw: tuple[int, int], n_identity: int = 0,
                keys_values: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """h (B, N, D) tokens of an (H, W) grid; y (B, L, D) caption features, or the cross-attention's
        ``keys_values`` computed before; t (B, 6D)."""
        d = h.shape[-1]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(t)
        n = F.layer_norm(h, (d,), eps=self.eps) * (1 + scale_msa) + shift_msa
        h = h + gate_msa * self.attn1(n.to(h.dtype), n_identity)
        h = self.attn2(h, y, bias, keys_values) + h  # this operand order keeps diffusers' memory layout (bf16 parity)
        n = F.layer_norm(h, (d,), eps=self.eps) * (1 + scale_mlp) + shift_mlp
        n = n.unflatten(1, hw).permute(0, 3, 1, 2)  # (B, N, D) → (B, D, H, W)
        ff = self.ff(n).flatten(2, 3).permute(0, 2, 1)  # → (B, N, D)
        return h + gate_mlp * ff


class SanaTrunk(nn.Module):
    """What the transformer and its ControlNet share: the patch, timestep and caption embedders and a stack of
    Sana blocks (``cfg.num_layers``). Every layer is built from ``operations`` (``layers.py``)."""

    compute_device: torch.device | None = None  # set by a host that keeps some weights on another device

    def __init__(self, cfg: SanaConfig, device=None, dtype=None, operations=Operations):
        super().__init__()
        self.cfg = cfg
        self.operations = operations
        d = cfg.dim
        self.patch_embed = PatchEmbed(cfg, device, dtype, operations)
        self.time_embed = TimeEmbed(d, cfg.guidance_embeds, device, dtype, operations)
        self.caption_projection = CaptionProjection(cfg.caption_channels, d, device, dtype, operations)
        self.caption_norm = operations.RMSNorm(d, 1e-5, device=device, dtype=dtype)
        self.transformer_blocks = nn.ModuleList(SanaBlock(cfg, device, dtype, operations)
                                                for _ in range(cfg.num_layers))

    @property
    def device(self) -> torch.device:
        """Where the model computes: ``compute_device`` when a host set it, else where its weights are."""
        return self.compute_device or self.patch_embed.proj.weight.device

    def _pos_embed(self, h: int, w: int, device) -> torch.Tensor:
        kept = caches.kept(self, "pos_embed", dict)  # (h, w, device) → the embedding
        key = (h, w, str(device))
        if key not in kept:
            cfg = self.cfg
            kept[key] = sincos_pos_embed(cfg.dim, h, w, cfg.sample_size // cfg.patch_size,
                                                   cfg.interpolation_scale, device)
        return kept[key]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, H, W) → patch tokens (B, N, D), row-major, with the positional embedding if any."""
        h = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        if self.cfg.interpolation_scale is not None:
            p = self.cfg.patch_size
            h = (h + self._pos_embed(x.shape[2] // p, x.shape[3] // p, x.device)).to(h.dtype)
        return h

    def caption_features(self, context: torch.Tensor) -> torch.Tensor:
        """(B, L, Cc) caption-encoder features → (B, L, D), the cross-attention's input in every block."""
        return self.caption_norm(self.caption_projection(context).view(context.shape[0], -1, self.cfg.dim))

    def caption(self, context: torch.Tensor) -> tuple[torch.Tensor | None, list | None]:
        """What the blocks attend to: (the caption features, None). The speed layer may instead give (None, each
        block's cross-attention keys and values computed before)."""
        return self.caption_features(context), None


def caption_bias(context_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A 0/1 caption mask (B, L) → the cross-attention's additive bias (B, 1, L)."""
    return None if context_mask is None else ((1 - context_mask.to(dtype)) * -10000.0).unsqueeze(1)


class SanaTransformer(SanaTrunk):
    """Predicts the flow velocity v for latents (B, 32, H, W) given caption features (B, L, 2304)."""

    def __init__(self, cfg: SanaConfig, device=None, dtype=None, operations=Operations):
        super().__init__(cfg, device, dtype, operations)
        d = cfg.dim
        self.scale_shift_table = nn.Parameter(torch.empty(2, d, device=device, dtype=dtype))
        self.proj_out = operations.Linear(d, cfg.patch_size**2 * cfg.out_channels, device=device, dtype=dtype)

    @property
    def dtype(self) -> torch.dtype:  # a table no storage format changes (8-bit storage keeps it in the compute dtype)
        return self.scale_shift_table.dtype

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None, guidance: torch.Tensor | None = None,
                identity_blocks: frozenset[int] = frozenset(), n_identity: int = 0,
                control: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, C, H, W) in the model dtype; timestep (B,); context (B, L, Cc) with context_mask (B, L) of 0/1;
        guidance (B,) for Sprint models.

        ``identity_blocks``/``n_identity``: in those blocks the last ``n_identity`` batch items use identity
        self-attention (perturbed-attention guidance). ``control``: a ControlNet's samples (B, N, D); sample k is
        added after block k + 1 (docs/model.md §1.3.5). Returns (B, C_out, H, W) in the model dtype.
        """
        cfg = self.cfg
        b, _, hh, ww = x.shape
        p = cfg.patch_size
        hp, wp = hh // p, ww // p
        bias = caption_bias(context_mask, x.dtype)

        h = self.tokens(x)  # (B, N, D)
        t, e = self.time_embed(timestep, guidance, h.dtype)  # (B, 6D), (B, D)
        y, keys_values = self.caption(context)  # (B, L, D) features, or each block's keys and values

        for i, block in enumerate(self.transformer_blocks):
            h = block(h, y, bias, t, (hp, wp), n_identity if i in identity_blocks else 0,
                      keys_values[i] if keys_values else None)
            if control is not None and 0 < i <= len(control):
                h = h + control[i - 1]

        shift, scale = (self.scale_shift_table.to(e.device)[None] + e[:, None]).chunk(2, dim=1)  # (B, 1, D) each
        h = F.layer_norm(h, (h.shape[-1],), eps=1e-6) * (1 + scale) + shift
        h = self.proj_out(h)  # (B, N, p·p·C)
        h = h.reshape(b, hp, wp, p, p, -1).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(b, -1, hp * p, wp * p)
