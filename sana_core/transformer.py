"""Sana Linear DiT (sana-spec §1): config, blocks, model. Reads top-down; diffusers state-dict names throughout."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from . import cudagraph

FAST_DEVICES = {"cuda"}  # where the blocks take their fused-layout forms in every dtype (tests add "cpu" to compare)
FAST_CPU_DTYPES = {torch.float32}  # and on the CPU (a 1024 px step ~12 % faster here); CPU bf16 keeps diffusers' order


_HALF_PRODUCTS: dict[str, bool] = {}


def _half_products(x: torch.Tensor) -> bool:
    """Whether this device multiplies fp16/bf16 matrices into an fp32 result (``bmm(..., out_dtype=float32)``,
    CUDA in recent PyTorch). Probed once per device type."""
    if x.dtype not in (torch.float16, torch.bfloat16):
        return False
    kind = x.device.type
    if kind not in _HALF_PRODUCTS:
        try:
            a = torch.ones(1, 2, 2, dtype=x.dtype, device=x.device)
            _HALF_PRODUCTS[kind] = torch.bmm(a, a, out_dtype=torch.float32).dtype == torch.float32
        except (TypeError, RuntimeError, NotImplementedError):
            _HALF_PRODUCTS[kind] = False
    return _HALF_PRODUCTS[kind]


def _weight(m: nn.Module) -> torch.Tensor:
    """A layer's weight in the compute dtype, whether stored plainly or in 8 bits (quant.py)."""
    return m.dequantize() if hasattr(m, "dequantize") else m.weight


def _fast(module: nn.Module, x: torch.Tensor) -> bool:
    """The fused forms: same math, fewer and contiguous kernels (no transposed copies, one rounding per fused op)."""
    return module.fast and (x.device.type in FAST_DEVICES or (x.device.type == "cpu" and x.dtype in FAST_CPU_DTYPES))


@dataclass(frozen=True)
class SanaConfig:
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
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_ratio * self.dim)

    @property
    def resolution(self) -> int:
        return self.sample_size * 32

    def replace(self, **kw) -> SanaConfig:
        return replace(self, **kw)


_600M = SanaConfig(num_layers=28, num_heads=36, cross_heads=16, cross_head_dim=72)
_1600M = SanaConfig(num_layers=20, num_heads=70, cross_heads=20, cross_head_dim=112)

# Published variants (sana-spec §1.2). MultiLing and BF16 releases share their base config.
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


class RMSNorm(nn.Module):
    """x·rsqrt(mean(x²)+eps) with an fp32 mean; cast to the weight dtype only when it is half precision."""

    def __init__(self, dim: int, eps: float, bias: bool = False, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(dim, device=device, dtype=dtype)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        x = x * self.weight
        if self.bias is not None:
            x = x + self.bias
        return x


def timestep_sinusoid(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """(B,) → (B, dim) fp32, cos first (flip_sin_to_cos, shift 0)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    arg = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


def sincos_pos_embed(dim: int, h: int, w: int, base: int, scale: float, device) -> torch.Tensor:
    """(1, h·w, dim) fp32 2-D sin-cos PE; first half encodes the column, second the row (sana-spec §1.3.2)."""
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

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        self.linear_1 = nn.Linear(256, dim, device=device, dtype=dtype)
        self.linear_2 = nn.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class _Emb(nn.Module):  # holds `timestep_embedder` under the `time_embed.emb.` prefix of AdaLN-single
    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        self.timestep_embedder = MLPEmbedder(dim, device, dtype)


class TimeEmbed(nn.Module):
    """AdaLN-single (or Sprint's timestep + guidance embedders) → (T (B, 6D), E (B, D))."""

    def __init__(self, dim: int, guidance: bool, device=None, dtype=None):
        super().__init__()
        if guidance:
            self.timestep_embedder = MLPEmbedder(dim, device, dtype)
            self.guidance_embedder = MLPEmbedder(dim, device, dtype)
        else:
            self.emb = _Emb(dim, device, dtype)
        self.linear = nn.Linear(dim, 6 * dim, device=device, dtype=dtype)

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
    def __init__(self, in_dim: int, dim: int, device=None, dtype=None):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim, device=device, dtype=dtype)
        self.linear_2 = nn.Linear(dim, dim, device=device, dtype=dtype)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(y), approximate="tanh"))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: SanaConfig, device=None, dtype=None):
        super().__init__()
        p = cfg.patch_size
        self.proj = nn.Conv2d(cfg.in_channels, cfg.dim, p, stride=p, device=device, dtype=dtype)


class LinearAttention(nn.Module):
    """attn1: ReLU linear attention, accumulated in fp32 (safe in fp16/bf16)."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_k = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_v = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, device=device, dtype=dtype)])
        if qk_norm:
            self.norm_q = RMSNorm(dim, 1e-5, device=device, dtype=dtype)
            self.norm_k = RMSNorm(dim, 1e-5, device=device, dtype=dtype)
        else:
            self.norm_q = self.norm_k = None
        self.fast = True

    def forward(self, x: torch.Tensor, n_identity: int = 0) -> torch.Tensor:
        """x (B, N, D). The last ``n_identity`` batch items get identity attention (PAG's perturbed chunk)."""
        if n_identity:
            keep = x.shape[0] - n_identity
            ident = self._out(self.to_v(x[keep:]))  # each token attends only to itself
            return ident if keep == 0 else torch.cat([self.forward(x[:keep]), ident])
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        if _fast(self, x):
            return self._out(self._attend_tokens(q, k, v))
        if self.norm_q is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        q = F.relu(q.transpose(1, 2).unflatten(1, (self.heads, -1))).float()  # (B, h, d, N)
        k = F.relu(k.transpose(1, 2).unflatten(1, (self.heads, -1)).transpose(2, 3)).float()  # (B, h, N, d)
        v = v.transpose(1, 2).unflatten(1, (self.heads, -1)).float()  # (B, h, d, N)
        v = F.pad(v, (0, 0, 0, 1), value=1.0)  # (B, h, d+1, N): the ones row yields the normaliser
        o = torch.matmul(torch.matmul(v, k), q)  # ((d+1)×d)·(d×N), in this order for parity
        o = o[:, :, :-1] / (o[:, :, -1:] + 1e-15)  # (B, h, d, N)
        return self._out(o.flatten(1, 2).transpose(1, 2).to(x.dtype))

    def _attend_tokens(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The same fp32 linear attention in the token layout (B, N, heads·d), per sample, with no transposed copy:
        Σ_N k⊗v and Σ_N k, then one (N × d) · (d × (d+1)) product per head gives numerator and normaliser."""
        if self.norm_q is not None:
            q, k = self.norm_q(q), self.norm_k(k)
        b, n, dim = q.shape
        h = self.heads
        d = dim // h
        out = torch.empty(b, n, h, d, dtype=v.dtype, device=v.device)  # back in the model dtype
        k = F.relu(k)
        half = _half_products(k)  # bf16/fp16 operands are exact in fp32: multiply them as they are, sum in fp32
        products = {"out_dtype": torch.float32} if half else {}
        if not half:
            k, v = k.float(), v.float()
        q = F.relu(q).float()
        s = torch.empty(b, h, d, d + 1, dtype=torch.float32, device=q.device)  # [Σ k⊗v | Σ k] per head
        s[..., d] = k.view(b, n, h, d).sum(1, dtype=torch.float32)
        for i in range(b):
            qi, ki, vi = (t[i].view(n, h, d).transpose(0, 1) for t in (q, k, v))  # (h, N, d) views
            s[i, :, :, :d] = torch.bmm(ki.transpose(1, 2), vi, **products)
            o = torch.bmm(qi, s[i])  # (h, N, d+1)
            torch.div(o[..., :d], o[..., d:] + 1e-15, out=out[i].transpose(0, 1))
        return out.view(b, n, dim)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        x = self.to_out[0](x)
        return x.clip(-65504, 65504) if x.dtype == torch.float16 else x


class CrossAttention(nn.Module):
    """attn2: softmax attention over the caption with an additive mask bias (B, 1, L)."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, device=None, dtype=None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.to_k = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.to_v = nn.Linear(dim, dim, device=device, dtype=dtype)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, device=device, dtype=dtype)])
        if qk_norm:
            self.norm_q = RMSNorm(dim, 1e-5, device=device, dtype=dtype)
            self.norm_k = RMSNorm(dim, 1e-5, device=device, dtype=dtype)
        else:
            self.norm_q = self.norm_k = None

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
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x (B, N, D); the caption y (B, L, D), or its ``kv`` prepared once per sampling run (``Caption``)."""
        b = x.shape[0]
        q = self.to_q(x)
        if self.norm_q is not None:
            q = self.norm_q(q)
        k, v = self.keys_values(y) if kv is None else kv
        q = q.view(b, -1, self.heads, q.shape[-1] // self.heads).transpose(1, 2)  # (B, h, N, d)
        mask = None if bias is None else bias[:, None]  # (B, 1, 1, L)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[3]).to(q.dtype)
        return self.to_out[0](o)


class GLUMBConv(nn.Module):
    def __init__(self, dim: int, hidden: int, device=None, dtype=None):
        super().__init__()
        self.conv_inverted = nn.Conv2d(dim, hidden * 2, 1, device=device, dtype=dtype)
        self.conv_depth = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, device=device,
                                    dtype=dtype)
        self.conv_point = nn.Conv2d(hidden, dim, 1, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, H, W)
        x = self.conv_depth(F.silu(self.conv_inverted(x)))
        x, gate = x.chunk(2, dim=1)
        return self.conv_point(x * F.silu(gate))

    def forward_tokens(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """The same block on tokens (B, N, D) → (B, N, D): the 1×1 convs as matmuls, the depthwise conv on the
        channels-last view of the tokens (no permuted copies), the gate written contiguously."""
        b, n, dim = x.shape
        inv, dw, point = self.conv_inverted, self.conv_depth, self.conv_point
        w_point = _weight(point)
        hid = w_point.shape[1]
        w_in, w_dw = _weight(inv).view(2, hid, dim), _weight(dw).view(2, hid, 1, 3, 3)
        b_in, b_dw = inv.bias.view(2, hid), dw.bias.view(2, hid)
        half = []  # value and gate halves computed apart (depthwise: exact), so each stays contiguous
        for j in range(2):
            t = F.silu(F.linear(x, w_in[j], b_in[j])).view(b, *hw, hid).permute(0, 3, 1, 2)  # channels-last
            t = F.conv2d(t, w_dw[j], b_dw[j], padding=1, groups=hid)
            half.append(t.permute(0, 2, 3, 1).reshape(b, n, hid))  # a view when the conv kept channels-last
        return F.linear(half[0] * F.silu(half[1]), w_point.view(dim, hid))


class SanaBlock(nn.Module):
    def __init__(self, cfg: SanaConfig, device=None, dtype=None):
        super().__init__()
        d = cfg.dim
        self.eps = cfg.norm_eps
        self.attn1 = LinearAttention(d, cfg.num_heads, cfg.qk_norm, device, dtype)
        self.attn2 = CrossAttention(d, cfg.cross_heads, cfg.qk_norm, device, dtype)
        self.ff = GLUMBConv(d, cfg.mlp_hidden, device, dtype)
        self.scale_shift_table = nn.Parameter(torch.empty(6, d, device=device, dtype=dtype))
        self.fast = True

    def forward(self, h, y, bias, t, hw: tuple[int, int], n_identity: int = 0, kv=None) -> torch.Tensor:
        b, d = h.shape[0], h.shape[-1]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + t.reshape(b, 6, -1)).chunk(6, dim=1)  # each (B, 1, D)
        if _fast(self, h):  # modulation inside the norm, gated residuals as one fused multiply-add each
            h = torch.addcmul(h, gate_msa, self.attn1(self._modulated(h, scale_msa, shift_msa), n_identity))
            h = self.attn2(h, y, bias, kv) + h
            return torch.addcmul(h, gate_mlp, self.ff.forward_tokens(self._modulated(h, scale_mlp, shift_mlp), hw))
        n = F.layer_norm(h, (d,), eps=self.eps) * (1 + scale_msa) + shift_msa
        h = h + gate_msa * self.attn1(n.to(h.dtype), n_identity)
        h = self.attn2(h, y, bias, kv) + h  # this operand order keeps diffusers' memory layout (bf16 parity)
        n = F.layer_norm(h, (d,), eps=self.eps) * (1 + scale_mlp) + shift_mlp
        n = n.unflatten(1, hw).permute(0, 3, 1, 2)  # (B, N, D) → (B, D, H, W)
        ff = self.ff(n).flatten(2, 3).permute(0, 2, 1)  # → (B, N, D)
        return h + gate_mlp * ff

    def _modulated(self, h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """LayerNorm(h)·(1 + scale) + shift as each sample's norm with that affine (one rounding, no broadcast op)."""
        d = h.shape[-1]
        w = 1 + scale
        return torch.stack([F.layer_norm(h[i], (d,), w[i, 0], shift[i, 0], self.eps) for i in range(h.shape[0])])


class Caption:
    """A caption held fixed for a whole sampling run: ``model(x, t, Caption(context, mask))`` equals
    ``model(x, t, context, mask)``, but each block's cross-attention keys and values (which depend on the caption
    only) are computed on the first step and reused by every later one (diffusers recomputes them each step: about
    1/6 of a 512 px step's arithmetic for the 0.6B model at batch 2).

    They are recomputed whenever the model's weights are not the ones they were made from (another model, a moved
    or reloaded or patched one: the weights' addresses and versions are checked on every step, like the CUDA graphs).
    A replayed CUDA graph uses the plain context, computing them inside the graph. Treat the context as read-only
    while the Caption is in use.
    """

    def __init__(self, context: torch.Tensor, mask: torch.Tensor | None = None):
        self.context, self.mask = context, mask
        self._key: tuple | None = None
        self._kv: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keys_values(self, model: SanaTransformer) -> list[tuple[torch.Tensor, torch.Tensor]]:
        def compute():
            y = model.caption_features(self.context)
            return [b.attn2.keys_values(y) for b in model.transformer_blocks]

        if torch.is_grad_enabled():  # keys and values kept across steps would join every step's autograd graph
            return compute()
        modules = [model.caption_projection, model.caption_norm] + [b.attn2 for b in model.transformer_blocks]
        key = (id(model), torch.is_inference_mode_enabled(), tuple(
            (t.data_ptr(), t.dtype, t.device, 0 if t.is_inference() else t._version)
            for m in modules for t in (*m.parameters(), *m.buffers())))
        if key != self._key:
            self._kv = []  # free the old ones first
            self._kv, self._key = compute(), key
        return self._kv


class SanaTransformer(nn.Module):
    """Predicts the flow velocity v for latents (B, 32, H, W) given caption features (B, L, 2304)."""

    def __init__(self, cfg: SanaConfig, device=None, dtype=None):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embed = PatchEmbed(cfg, device, dtype)
        self.time_embed = TimeEmbed(d, cfg.guidance_embeds, device, dtype)
        self.caption_projection = CaptionProjection(cfg.caption_channels, d, device, dtype)
        self.caption_norm = RMSNorm(d, 1e-5, device=device, dtype=dtype)
        self.transformer_blocks = nn.ModuleList(SanaBlock(cfg, device, dtype) for _ in range(cfg.num_layers))
        self.scale_shift_table = nn.Parameter(torch.empty(2, d, device=device, dtype=dtype))
        self.proj_out = nn.Linear(d, cfg.patch_size**2 * cfg.out_channels, device=device, dtype=dtype)
        self._pe_cache: dict[tuple, torch.Tensor] = {}
        self.cuda_graphs = True  # replay captured steps on a GPU (cudagraph.py); False: always eager
        self._graphs = cudagraph.GraphCache()

    @property
    def dtype(self) -> torch.dtype:  # a table no storage format changes (8-bit storage keeps it in the compute dtype)
        return self.scale_shift_table.dtype

    def _pos_embed(self, h: int, w: int, device) -> torch.Tensor:
        key = (h, w, str(device))
        if key not in self._pe_cache:
            cfg = self.cfg
            self._pe_cache[key] = sincos_pos_embed(cfg.dim, h, w, cfg.sample_size // cfg.patch_size,
                                                   cfg.interpolation_scale, device)
        return self._pe_cache[key]

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None, guidance: torch.Tensor | None = None,
                identity_blocks: frozenset[int] = frozenset(), n_identity: int = 0) -> torch.Tensor:
        """x (B, C, H, W) in the model dtype; timestep (B,); context (B, L, Cc) and context_mask (B, L) of 0/1, or a
        ``Caption`` of both, held for a sampling run (its keys and values are computed once).

        ``identity_blocks``/``n_identity``: in those blocks the last ``n_identity`` batch items use identity
        self-attention (perturbed-attention guidance). Returns (B, C_out, H, W) in the model dtype.
        """
        identity_blocks = frozenset(identity_blocks)
        caption = None
        if isinstance(context, Caption):
            caption, context, context_mask = context, context.context, context.mask
        if self.cuda_graphs and cudagraph.usable(x):  # a replay recomputes the caption's keys and values in-graph
            def eager(*a):
                return self._forward(*a, identity_blocks=identity_blocks, n_identity=n_identity)
            forms = tuple(m.fast for m in self.modules() if isinstance(m, (SanaBlock, LinearAttention)))
            return self._graphs.run(self, eager, (x, timestep, context, context_mask, guidance),
                                    (identity_blocks, n_identity, forms))  # a graph per set of block forms
        return self._forward(x, timestep, context, context_mask, guidance, identity_blocks, n_identity, caption)

    def caption_features(self, context: torch.Tensor) -> torch.Tensor:
        """(B, L, Cc) caption-encoder features → (B, L, D), the cross-attention's input in every block."""
        return self.caption_norm(self.caption_projection(context).view(context.shape[0], -1, self.cfg.dim))

    def _apply(self, fn, *args, **kwargs):  # .to()/.cuda()/.half() move the weights: captured graphs are stale
        self._graphs.clear()
        return super()._apply(fn, *args, **kwargs)

    def _forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                 context_mask: torch.Tensor | None, guidance: torch.Tensor | None,
                 identity_blocks: frozenset[int], n_identity: int, caption: Caption | None = None) -> torch.Tensor:
        cfg = self.cfg
        b, _, hh, ww = x.shape
        p = cfg.patch_size
        hp, wp = hh // p, ww // p
        bias = None
        if context_mask is not None:
            bias = ((1 - context_mask.to(x.dtype)) * -10000.0).unsqueeze(1)  # (B, 1, L)

        h = self.patch_embed.proj(x).flatten(2).transpose(1, 2)  # (B, N, D), row-major tokens
        if cfg.interpolation_scale is not None:
            h = (h + self._pos_embed(hp, wp, x.device)).to(h.dtype)
        t, e = self.time_embed(timestep, guidance, h.dtype)  # (B, 6D), (B, D)
        if caption is None:
            y, kvs = self.caption_features(context), [None] * len(self.transformer_blocks)
        else:
            y, kvs = None, caption.keys_values(self)

        for i, (block, kv) in enumerate(zip(self.transformer_blocks, kvs)):
            h = block(h, y, bias, t, (hp, wp), n_identity if i in identity_blocks else 0, kv)

        shift, scale = (self.scale_shift_table[None] + e[:, None]).chunk(2, dim=1)
        h = F.layer_norm(h, (h.shape[-1],), eps=1e-6) * (1 + scale) + shift
        h = self.proj_out(h)  # (B, N, p·p·C)
        h = h.reshape(b, hp, wp, p, p, -1).permute(0, 5, 1, 3, 2, 4)
        return h.reshape(b, -1, hp * p, wp * p)
