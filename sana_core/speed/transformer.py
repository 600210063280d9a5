"""Faster forms of the Sana transformer (the reference is ``sana_core/transformer.py``) and of the SANA-Video
transformer (its kept caption and graph replay only); ``speed.apply`` installs them.

Same function as the reference, fewer and contiguous kernels (docs/architecture.md, "The speed layer"):
- fused-layout blocks (``policy.fused_blocks``): the linear attention in the token layout with no transposed copies,
  half-precision products summed into fp32; the Mix-FFN's 1×1 convs as matmuls and its depthwise conv on the
  channels-last view of the tokens; the modulation folded into each sample's norm; gated residuals as one
  multiply-add. They round differently from diffusers' op order (one rounding per fused op).
- the caption's cross-attention keys and values, which depend on the caption only, computed once per caption
  instead of every step and handed to the blocks through the reference's ``caption`` seam: a context whose values
  were seen on the previous call or shortly before (a sampler's loop passes the same caption every step, ComfyUI in
  a fresh tensor each time) keeps them, recomputed whenever the weights change (``stamp``). The last
  ``KEPT_CAPTIONS`` contexts are remembered. Bit-identical.
- CUDA-graph replay of the whole call (``cudagraph.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import caches
from ..controlnet import SanaControlNet
from ..layers import casts_per_call
from ..transformer import LinearAttention, MixFFN, SanaBlock, SanaTransformer
from ..video_transformer import SanaVideoTransformer
from . import policy
from .cudagraph import GraphCache
from .stamp import stamp, tensors_of

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


class FastLinearAttention(LinearAttention):
    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The same fp32 linear attention in the token layout (B, N, heads·d), per sample, with no transposed copy:
        Σ_N k⊗v and Σ_N k, then one (N × d) · (d × (d+1)) product per head gives numerator and normaliser."""
        if not policy.fused_blocks(q):
            return super().attend(q, k, v)
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


def mix_ffn_tokens(ff: MixFFN, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``MixFFN`` on tokens (B, N, D) → (B, N, D): the 1×1 convs as matmuls, the depthwise conv on the
    channels-last view of the tokens (no permuted copies), the gate written contiguously."""
    b, n, dim = x.shape
    inv, dw, point = ff.conv_inverted, ff.conv_depth, ff.conv_point
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


def _modulated(h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm(h)·(1 + scale) + shift as each sample's norm with that affine (one rounding, no broadcast op)."""
    d = h.shape[-1]
    w = 1 + scale
    return torch.stack([F.layer_norm(h[i], (d,), w[i, 0], shift[i, 0], eps) for i in range(h.shape[0])])


class FastSanaBlock(SanaBlock):
    def forward(self, h, y, bias, t, hw: tuple[int, int], n_identity: int = 0, keys_values=None) -> torch.Tensor:
        if not policy.fused_blocks(h) or casts_per_call(self.ff):  # the Mix-FFN form reads the weights itself
            return super().forward(h, y, bias, t, hw, n_identity, keys_values)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.modulation(t)
        h = torch.addcmul(h, gate_msa, self.attn1(_modulated(h, scale_msa, shift_msa, self.eps), n_identity))
        h = self.attn2(h, y, bias, keys_values) + h
        return torch.addcmul(h, gate_mlp, mix_ffn_tokens(self.ff, _modulated(h, scale_mlp, shift_mlp, self.eps), hw))


KEPT_CAPTIONS = 4  # contexts remembered: a prompt pair, separate or batched, and spares for combined prompts


class SeenCaption:
    """A context seen before: a copy of its values and, from its second sighting on, each block's cross-attention
    keys and values for it (``value``), with the stamp of the weights they came from (``key``)."""

    def __init__(self, context: torch.Tensor):
        self.context = context.detach().clone()
        self.key: tuple | None = None
        self.value: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def holds(self, context: torch.Tensor) -> bool:
        c = self.context
        return c.shape == context.shape and c.dtype == context.dtype and c.device == context.device and \
            torch.equal(c, context)


class KeptCaption:
    """The caption's cross-attention keys and values kept per remembered context (a mixin for the transformer and
    its ControlNet): the reference's ``caption`` seam gives the blocks those instead of the features."""

    def caption(self, context: torch.Tensor) -> tuple[torch.Tensor | None, list | None]:
        if not policy.keep_across_calls() or (context.is_cuda and torch.cuda.is_current_stream_capturing()):
            return super().caption(context)
        if casts_per_call(self):  # weights a host patches per call: no stamp sees a change
            return super().caption(context)
        seen: list[SeenCaption] = caches.kept(self, "captions", list)  # most recently used first
        entry = next((e for e in seen if e.holds(context)), None)
        if entry is None:  # first sight: remember the values only (a one-off call computes nothing extra)
            seen.insert(0, SeenCaption(context))
            del seen[KEPT_CAPTIONS:]
            return super().caption(context)
        seen.remove(entry)
        seen.insert(0, entry)
        attn2 = [b.attn2 for b in self.transformer_blocks]
        key = (torch.is_inference_mode_enabled(), stamp(tensors_of(self.caption_projection, self.caption_norm,
                                                                   *attn2)))
        if key != entry.key:
            entry.value = None  # free the old ones first
            y = self.caption_features(context)
            entry.value, entry.key = [a.keys_values(y) for a in attn2], key
        return None, entry.value

    def _apply(self, fn, *args, **kwargs):  # .to()/.cuda()/.half() move the weights: kept values go
        caches.drop(self, "captions")
        return super()._apply(fn, *args, **kwargs)


class FastSanaTransformer(KeptCaption, SanaTransformer):
    """Graph replay on CUDA; the caption's keys and values kept per remembered context."""

    def forward(self, x, timestep, context, context_mask=None, guidance=None, identity_blocks=frozenset(),
                n_identity=0, control=None):
        identity_blocks = frozenset(identity_blocks)
        if policy.cuda_graphs(x) and control is None and not casts_per_call(self):
            # a replay computes the caption's keys and values in-graph; weights a host casts per call are not replayable
            def eager(*inputs):
                return super(FastSanaTransformer, self).forward(*inputs, identity_blocks=identity_blocks,
                                                                 n_identity=n_identity)
            return self._graphs().run(self, eager, (x, timestep, context, context_mask, guidance),
                                      (identity_blocks, n_identity, policy.fused_blocks(x)))
        return super().forward(x, timestep, context, context_mask, guidance, identity_blocks, n_identity, control)

    def _graphs(self) -> GraphCache:
        return caches.kept(self, "graphs", GraphCache)

    def _apply(self, fn, *args, **kwargs):  # .to()/.cuda()/.half() move the weights: captured graphs are stale
        caches.drop(self, "graphs")
        return super()._apply(fn, *args, **kwargs)


class FastSanaControlNet(KeptCaption, SanaControlNet):
    """The ControlNet with the caption's keys and values kept across steps."""


class FastSanaVideoTransformer(KeptCaption, SanaVideoTransformer):
    """Graph replay on CUDA; the caption's keys and values kept per remembered context (its blocks keep diffusers'
    op order: no fused forms for video yet)."""

    def forward(self, x, timestep, context, context_mask=None, guidance=None):
        if policy.cuda_graphs(x) and not casts_per_call(self):
            def eager(*inputs):
                return super(FastSanaVideoTransformer, self).forward(*inputs)
            return self._graphs().run(self, eager, (x, timestep, context, context_mask, guidance), ())
        return super().forward(x, timestep, context, context_mask, guidance)

    def _graphs(self) -> GraphCache:
        return caches.kept(self, "graphs", GraphCache)

    def _apply(self, fn, *args, **kwargs):  # moved weights: captured graphs are stale
        caches.drop(self, "graphs")
        return super()._apply(fn, *args, **kwargs)


FORMS = {LinearAttention: FastLinearAttention, SanaBlock: FastSanaBlock,
         SanaTransformer: FastSanaTransformer, SanaControlNet: FastSanaControlNet,
         SanaVideoTransformer: FastSanaVideoTransformer}
