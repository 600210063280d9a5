"""DC-AE config and building blocks (docs/model.md §2.1–2.3): plain PyTorch with diffusers' module and state-dict
names.

Every op mirrors diffusers' ``AutoencoderDC`` in order and dtype, so fp32 outputs match it to rounding. Feature maps
are (B, C, H, W) throughout; norms and linears run channels-last through ``movedim`` exactly as diffusers does (the
strided layout changes bf16 rounding, docs/model.md §9.7). Faster CPU forms live in ``speed/dcae.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .errors import SanaError
from .latent import SANA, LatentSpace
from .layers import Operations, RMSNorm

ACTIVATIONS: dict[str, type[nn.Module]] = {"silu": nn.SiLU, "swish": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU,
                                           "mish": nn.Mish}

_EVIT = (5,)


@dataclass(frozen=True)
class DCAEConfig:
    """diffusers ``AutoencoderDC`` fields; the defaults are the published f32c32 Sana preset (1.0 and 1.1)."""

    in_channels: int = 3
    latent_channels: int = SANA.channels
    attention_head_dim: int = 32
    encoder_block_types: tuple[str, ...] = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
    decoder_block_types: tuple[str, ...] = ("ResBlock",) * 3 + ("EfficientViTBlock",) * 3
    encoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512, 1024, 1024)
    encoder_layers_per_block: tuple[int, ...] = (2, 2, 2, 3, 3, 3)
    decoder_layers_per_block: tuple[int, ...] = (3, 3, 3, 3, 3, 3)
    encoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), _EVIT, _EVIT, _EVIT)
    decoder_qkv_multiscales: tuple[tuple[int, ...], ...] = ((), (), (), _EVIT, _EVIT, _EVIT)
    upsample_block_type: str = "interpolate"  # anything else: conv + pixel_shuffle
    downsample_block_type: str = "Conv"  # anything but "pixel_unshuffle": strided conv
    decoder_norm_types: tuple[str, ...] = ("rms_norm",) * 6
    decoder_act_fns: tuple[str, ...] = ("silu",) * 6
    encoder_out_shortcut: bool = True
    decoder_in_shortcut: bool = True
    decoder_conv_act_fn: str = "relu"
    scaling_factor: float = SANA.scaling_factor

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.encoder_block_out_channels) - 1)

    @property
    def latent_space(self) -> LatentSpace:
        return LatentSpace(self.latent_channels, self.spatial_compression, self.scaling_factor)

    @classmethod
    def from_diffusers(cls, cfg: dict, source: str = "config") -> DCAEConfig:
        """Read a diffusers ``config.json`` dict; absent fields take diffusers' constructor defaults."""
        if cfg.get("_class_name", "AutoencoderDC") != "AutoencoderDC":
            raise SanaError(f"{source}: _class_name is {cfg['_class_name']!r}, expected 'AutoencoderDC' (a DC-AE)")
        kw = {**_DIFFUSERS_DEFAULTS, **{k: v for k, v in cfg.items() if k in _FIELDS}}
        n_enc, n_dec = len(kw["encoder_block_out_channels"]), len(kw["decoder_block_out_channels"])
        for name, n in (("encoder_block_types", n_enc), ("decoder_block_types", n_dec),
                        ("decoder_norm_types", n_dec), ("decoder_act_fns", n_dec)):
            if isinstance(kw[name], str):
                kw[name] = (kw[name],) * n
        for name in _FIELDS:
            if isinstance(kw[name], list):
                kw[name] = tuple(tuple(v) if isinstance(v, list) else v for v in kw[name])
        return cls(**kw).validate(source)

    def validate(self, source: str = "config") -> DCAEConfig:
        n = len(self.encoder_block_out_channels)
        per_stage = {k: len(getattr(self, k)) for k in ("encoder_block_types", "encoder_layers_per_block",
                                                        "encoder_qkv_multiscales", "decoder_block_out_channels",
                                                        "decoder_block_types", "decoder_layers_per_block",
                                                        "decoder_qkv_multiscales", "decoder_norm_types",
                                                        "decoder_act_fns")}
        bad = {k: v for k, v in per_stage.items() if v != n}
        if bad:
            raise SanaError(f"{source}: per-stage fields must all have {n} entries (one per encoder stage); found {bad}")
        types = set(self.encoder_block_types) | set(self.decoder_block_types)
        if not types <= {"ResBlock", "EfficientViTBlock"}:
            raise SanaError(f"{source}: block types {sorted(types)}; expected ResBlock or EfficientViTBlock")
        if min(self.encoder_layers_per_block + self.decoder_layers_per_block) < 1:
            raise SanaError(f"{source}: layers per block {self.encoder_layers_per_block} / "
                            f"{self.decoder_layers_per_block}; only DC-AEs with every stage populated (the f32c32 "
                            "Sana family) are supported")
        if set(self.decoder_norm_types) != {"rms_norm"}:
            raise SanaError(f"{source}: decoder_norm_types {self.decoder_norm_types}; only rms_norm is supported")
        acts = set(self.decoder_act_fns) | {self.decoder_conv_act_fn}
        if not acts <= set(ACTIVATIONS):
            raise SanaError(f"{source}: activations {sorted(acts)}; expected one of {sorted(ACTIVATIONS)}")
        last = self.encoder_block_out_channels[-1]
        if last % self.latent_channels or self.decoder_block_out_channels[-1] % self.latent_channels:
            raise SanaError(f"{source}: deepest width {last} is not a multiple of latent_channels "
                            f"{self.latent_channels}")
        return self


_FIELDS = {f.name for f in fields(DCAEConfig)}
# diffusers' AutoencoderDC constructor defaults where they differ from the Sana preset (hub configs state them all).
_DIFFUSERS_DEFAULTS = {**asdict(DCAEConfig()), "encoder_block_types": "ResBlock", "decoder_block_types": "ResBlock",
                       "upsample_block_type": "pixel_shuffle", "downsample_block_type": "pixel_unshuffle",
                       "decoder_norm_types": "rms_norm", "decoder_act_fns": "silu", "scaling_factor": 1.0}
SANA_F32C32 = DCAEConfig()


def norm_channels(norm: RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """Apply a last-dim norm over the channels of (B, C, H, W)."""
    return norm(x.movedim(1, -1)).movedim(-1, 1)


class ResBlock(nn.Module):
    """conv1 3×3 → act → conv2 3×3 (no bias) → RMSNorm over channels → + input."""

    def __init__(self, channels: int, act_fn: str = "silu", operations=Operations):
        super().__init__()
        self.nonlinearity = ACTIVATIONS[act_fn]()
        self.conv1 = operations.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = operations.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.norm = operations.RMSNorm(channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.nonlinearity(self.conv1(x)))
        return norm_channels(self.norm, h) + x


class MultiscaleProjection(nn.Module):
    """Depthwise k×k conv over the 3C qkv channels, then a 1×1 conv grouped per (q|k|v, head)."""

    def __init__(self, channels: int, heads: int, kernel_size: int, operations=Operations):
        super().__init__()
        self.proj_in = operations.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels,
                                         bias=False)
        self.proj_out = operations.Conv2d(channels, channels, 1, 1, 0, groups=3 * heads, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.proj_in(x))


class MultiscaleLinearAttention(nn.Module):
    """ReLU linear attention over [qkv ‖ multiscale(qkv)] heads (diffusers ``SanaMultiscaleLinearAttention``).

    Linear form (N > head_dim) runs in fp32 with eps 1e-15; tiny maps use diffusers' "quadratic" form.
    """

    eps = 1e-15

    def __init__(self, channels: int, head_dim: int, kernel_sizes: tuple[int, ...], operations=Operations):
        super().__init__()
        self.head_dim = head_dim
        heads = int(channels // head_dim * 1.0)  # diffusers: int(in_channels // head_dim * mult), mult 1
        inner = heads * head_dim
        self.to_q = operations.Linear(channels, inner, bias=False)
        self.to_k = operations.Linear(channels, inner, bias=False)
        self.to_v = operations.Linear(channels, inner, bias=False)
        self.to_qkv_multiscale = nn.ModuleList(MultiscaleProjection(3 * inner, heads, k, operations)
                                               for k in kernel_sizes)
        self.nonlinearity = nn.ReLU()
        self.to_out = operations.Linear(inner * (1 + len(kernel_sizes)), channels, bias=False)
        self.norm_out = operations.RMSNorm(channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return norm_channels(self.norm_out, self.attend(x)) + x

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → the attention's output projection (B, C, H, W), before the norm and the residual."""
        b, _, h, w = x.shape
        use_linear = h * w > self.head_dim
        dtype = x.dtype
        t = x.movedim(1, -1)  # (B, H, W, C)
        qkv = torch.cat([self.to_q(t), self.to_k(t), self.to_v(t)], dim=3).movedim(-1, 1)  # (B, 3D, H, W)
        qkv = torch.cat([qkv] + [m(qkv) for m in self.to_qkv_multiscale], dim=1)  # (B, 3D·(1+S), H, W)
        if use_linear:
            qkv = qkv.to(torch.float32)
        qkv = qkv.reshape(b, -1, 3 * self.head_dim, h * w)  # (B, heads', 3·hd, N): each head is [q | k | v]
        q, k, v = qkv.chunk(3, dim=2)  # (B, heads', hd, N) each
        q, k = self.nonlinearity(q), self.nonlinearity(k)
        if use_linear:
            v = F.pad(v, (0, 0, 0, 1), mode="constant", value=1)  # (B, heads', hd+1, N): last row sums the keys
            out = torch.matmul(torch.matmul(v, k.transpose(-1, -2)), q)  # (B, heads', hd+1, N)
            out = out.to(torch.float32)
            out = (out[:, :, :-1] / (out[:, :, -1:] + self.eps)).to(dtype)  # (B, heads', hd, N)
        else:
            s = torch.matmul(k.transpose(-1, -2), q).to(torch.float32)  # (B, heads', N, N)
            s = s / (torch.sum(s, dim=2, keepdim=True) + self.eps)
            out = torch.matmul(v, s.to(v.dtype))  # (B, heads', hd, N)
        out = torch.reshape(out, (b, -1, h, w))  # (B, D·(1+S), H, W)
        return self.to_out(out.movedim(1, -1)).movedim(-1, 1)  # (B, C, H, W)


class MixFFNBlock(nn.Module):
    """The DC-AE's Mix-FFN with its norm and residual (diffusers' GLUMBConv): 1×1 C→8C → SiLU → depthwise 3×3 →
    value·SiLU(gate) → 1×1 4C→C → RMSNorm → + input."""

    def __init__(self, channels: int, expand_ratio: float = 4, operations=Operations):
        super().__init__()
        hidden = int(expand_ratio * channels)
        self.nonlinearity = nn.SiLU()
        self.conv_inverted = operations.Conv2d(channels, hidden * 2, 1, 1, 0)
        self.conv_depth = operations.Conv2d(hidden * 2, hidden * 2, 3, 1, 1, groups=hidden * 2)
        self.conv_point = operations.Conv2d(hidden, channels, 1, 1, 0, bias=False)
        self.norm = operations.RMSNorm(channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_depth(self.nonlinearity(self.conv_inverted(x)))  # (B, 8C, H, W)
        h, gate = torch.chunk(h, 2, dim=1)  # (B, 4C, H, W) each
        h = self.conv_point(h * self.nonlinearity(gate))
        return norm_channels(self.norm, h) + x


class EfficientViTBlock(nn.Module):
    def __init__(self, channels: int, head_dim: int, kernel_sizes: tuple[int, ...], operations=Operations):
        super().__init__()
        self.attn = MultiscaleLinearAttention(channels, head_dim, kernel_sizes, operations)
        self.conv_out = MixFFNBlock(channels, operations=operations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.attn(x))


class DCDownBlock2d(nn.Module):
    """Halve H, W: strided conv ("Conv") or conv + pixel_unshuffle, plus a pixel_unshuffle channel-average shortcut."""

    def __init__(self, in_channels: int, out_channels: int, pixel_unshuffle: bool, operations=Operations):
        super().__init__()
        self.pixel_unshuffle = pixel_unshuffle
        self.group_size = in_channels * 4 // out_channels
        conv_out = out_channels // 4 if pixel_unshuffle else out_channels
        self.conv = operations.Conv2d(in_channels, conv_out, 3, 1 if pixel_unshuffle else 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.pixel_unshuffle:
            h = F.pixel_unshuffle(h, 2)
        return h + self.shortcut(x)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pixel_unshuffle(x, 2)  # (B, 4·C_in, H/2, W/2)
        return y.unflatten(1, (-1, self.group_size)).mean(dim=2)  # (B, C_out, H/2, W/2)


class DCUpBlock2d(nn.Module):
    """Double H, W: nearest upsample + conv ("interpolate") or conv + pixel_shuffle, plus a repeat+shuffle shortcut."""

    def __init__(self, in_channels: int, out_channels: int, interpolate: bool, operations=Operations):
        super().__init__()
        self.interpolate = interpolate
        self.repeats = out_channels * 4 // in_channels
        self.conv = operations.Conv2d(in_channels, out_channels if interpolate else out_channels * 4, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpolate:
            h = self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        else:
            h = F.pixel_shuffle(self.conv(x), 2)
        y = x.repeat_interleave(self.repeats, dim=1, output_size=x.shape[1] * self.repeats)  # (B, 4·C_out, H, W)
        return h + F.pixel_shuffle(y, 2)  # (B, C_out, 2H, 2W)


def make_block(block_type: str, channels: int, head_dim: int, kernel_sizes: tuple[int, ...], act_fn: str,
               operations=Operations) -> nn.Module:
    if block_type == "ResBlock":
        return ResBlock(channels, act_fn, operations)
    return EfficientViTBlock(channels, head_dim, kernel_sizes, operations)


class Encoder(nn.Module):
    """conv_in → stages (blocks, then a Down block except after the last) → conv_out + channel-mean shortcut."""

    def __init__(self, in_channels: int, latent_channels: int, head_dim: int, block_types: tuple[str, ...],
                 widths: tuple[int, ...], layers: tuple[int, ...], multiscales: tuple[tuple[int, ...], ...],
                 pixel_unshuffle: bool, out_shortcut: bool, operations=Operations):
        super().__init__()
        self.conv_in = operations.Conv2d(in_channels, widths[0], 3, 1, 1)
        stages = []
        for i, (w, n) in enumerate(zip(widths, layers)):
            blocks = [make_block(block_types[i], w, head_dim, multiscales[i], "silu", operations) for _ in range(n)]
            if i < len(widths) - 1:
                blocks.append(DCDownBlock2d(w, widths[i + 1], pixel_unshuffle, operations))
            stages.append(nn.Sequential(*blocks))
        self.down_blocks = nn.ModuleList(stages)
        self.conv_out = operations.Conv2d(widths[-1], latent_channels, 3, 1, 1)
        self.out_shortcut = out_shortcut
        self.group_size = widths[-1] // latent_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) → (B, C_lat, H/r, W/r)
        h = self.conv_in(x)
        for stage in self.down_blocks:
            h = stage(h)
        if not self.out_shortcut:
            return self.conv_out(h)
        y = h.unflatten(1, (-1, self.group_size)).mean(dim=2)  # (B, C_lat, h, w)
        return self.conv_out(h) + y


class Decoder(nn.Module):
    """conv_in + channel-repeat shortcut → up_blocks[last] … [0] (Up block first, then blocks) → RMSNorm → act → conv_out."""

    def __init__(self, out_channels: int, latent_channels: int, head_dim: int, block_types: tuple[str, ...],
                 widths: tuple[int, ...], layers: tuple[int, ...], multiscales: tuple[tuple[int, ...], ...],
                 act_fns: tuple[str, ...], interpolate: bool, in_shortcut: bool, conv_act_fn: str,
                 operations=Operations):
        super().__init__()
        self.conv_in = operations.Conv2d(latent_channels, widths[-1], 3, 1, 1)
        self.in_shortcut = in_shortcut
        self.repeats = widths[-1] // latent_channels
        stages = []
        for i, (w, n) in enumerate(zip(widths, layers)):
            blocks = [DCUpBlock2d(widths[i + 1], w, interpolate, operations)] if i < len(widths) - 1 else []
            blocks += [make_block(block_types[i], w, head_dim, multiscales[i], act_fns[i], operations)
                       for _ in range(n)]
            stages.append(nn.Sequential(*blocks))
        self.up_blocks = nn.ModuleList(stages)
        self.norm_out = operations.RMSNorm(widths[0], bias=True)
        self.conv_act = ACTIVATIONS[conv_act_fn]()
        self.conv_out = operations.Conv2d(widths[0], out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, C_lat, h, w) → (B, 3, h·r, w·r)
        if self.in_shortcut:
            y = z.repeat_interleave(self.repeats, dim=1, output_size=z.shape[1] * self.repeats)  # (B, C_last, h, w)
            h = self.conv_in(z) + y
        else:
            h = self.conv_in(z)
        for stage in reversed(self.up_blocks):
            h = stage(h)
        h = self.conv_act(norm_channels(self.norm_out, h))
        return self.conv_out(h)
