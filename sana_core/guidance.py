"""Guidance wraps the network into a model function; the sampler never knows (docs/model.md §4.2, §5).

Batch layouts (each chunk B items): CFG → [uncond, cond]; PAG → [cond, cond_perturbed];
CFG + PAG → [uncond, cond, cond_perturbed]. The perturbed chunk gets identity self-attention in the PAG blocks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import SanaError
from .transformer import SanaTransformer


@dataclass(frozen=True)
class TextCond:
    """Caption features (B, L, C) and their 0/1 mask (B, L); each sample keeps its own mask."""
    embeds: torch.Tensor
    mask: torch.Tensor

    def repeat_to(self, batch: int, what: str) -> TextCond:
        b = self.embeds.shape[0]
        if b == batch:
            return self
        if b == 1:
            return TextCond(self.embeds.expand(batch, -1, -1), self.mask.expand(batch, -1))
        raise SanaError(f"{what} has a batch of {b} but the latent has {batch}; use one prompt or as many as latents")


def parse_pag_layers(spec: str | list[int] | tuple[int, ...], num_layers: int) -> frozenset[int]:
    """"8" / "8,9" / "7-9" / [8] → block indices, each checked against the model's depth."""
    if isinstance(spec, str):
        out: set[int] = set()
        for part in filter(None, (p.strip() for p in re.split(r"[,\s]+", spec))):
            m = re.fullmatch(r"(-?\d+)(?:-(\d+))?", part)
            if not m:
                raise SanaError(f"pag_layers: cannot read {part!r}; expected block indices like '8' or '7,8' or "
                                f"'6-9' in 0..{num_layers - 1}")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            out.update(range(lo, hi + 1))
    else:
        out = {int(i) for i in spec}
    bad = sorted(i for i in out if not 0 <= i < num_layers)
    if bad:
        raise SanaError(f"pag_layers: block index {bad} out of range; this model has blocks 0..{num_layers - 1}")
    if not out:
        raise SanaError(f"pag_layers is empty; give block indices in 0..{num_layers - 1}")
    return frozenset(out)


def pag_scale_at(scale: float, adaptive: float, t: float) -> float:
    """PAG's scale at model timestep ``t`` (0..1000): constant, or max(0, scale − adaptive·(1000 − t))."""
    return max(0.0, scale - adaptive * (1000 - t)) if adaptive else scale


def pag_guide(guided: torch.Tensor, cond: torch.Tensor, perturbed: torch.Tensor, scale: float) -> torch.Tensor:
    """PAG on top of (CFG-)guided output: guided + s·(cond − perturbed). The same on velocities and on data
    predictions, being linear; the host's PAG patch and the core's model function both use it."""
    return guided + scale * (cond - perturbed)


def _pad_to(c: TextCond, length: int) -> TextCond:
    pad = length - c.embeds.shape[1]
    if pad == 0:
        return c
    return TextCond(F.pad(c.embeds, (0, 0, 0, pad)), F.pad(c.mask, (0, pad)))


def guided_model_fn(model: SanaTransformer, cond: TextCond, uncond: TextCond | None, cfg: float = 4.5,
                    pag_scale: float = 0.0, pag_adaptive_scale: float = 0.0, pag_layers: frozenset[int] = frozenset(),
                    guidance: torch.Tensor | None = None, timestep_scale: float | None = None,
                    control=None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Build ``model_fn(x fp32 (B,C,H,W), t (B,)) -> v fp32``.

    CFG is active when ``cfg > 1`` (and needs ``uncond``); PAG when ``pag_scale > 0`` and layers are given.
    PAG's scale decays as max(0, pag_scale − pag_adaptive_scale·(1000 − t)) when adaptive is non-zero.
    ``control`` (``controlnet.Control``): a ControlNet run on the same batch, its samples added to the model's.
    """
    use_cfg = cfg > 1.0
    use_pag = pag_scale > 0 and bool(pag_layers)
    if use_cfg and uncond is None:
        raise SanaError("cfg > 1 needs a negative (unconditional) conditioning")
    dev, dt = model.device, model.dtype
    ts = model.cfg.timestep_scale if timestep_scale is None else timestep_scale
    chunks = ([(uncond, "negative")] if use_cfg else []) + [(cond, "positive")] * (2 if use_pag else 1)
    n_chunks = len(chunks)
    # batch size → the batched caption and mask, built once: every step passes the same tensors, so the model may
    # keep what depends on the caption alone (speed/transformer.py)
    text: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def batched_text(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if b not in text:
            cs = [c.repeat_to(b, name) for c, name in chunks]
            length = max(c.embeds.shape[1] for c in cs)
            cs = [_pad_to(c, length) for c in cs]
            text[b] = torch.cat([c.embeds for c in cs]).to(dev, dt), torch.cat([c.mask for c in cs]).to(dev)
        return text[b]

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x_in = torch.cat([x] * n_chunks).to(dev, dt)
        t_in = torch.cat([t] * n_chunks).to(dev, torch.float32) * ts
        g = None if guidance is None else guidance.to(dev).expand(b).repeat(n_chunks)
        samples = None if control is None else control.samples(x_in, t_in, *batched_text(b))
        out = model(x_in, t_in, *batched_text(b), guidance=g, identity_blocks=pag_layers if use_pag else frozenset(),
                    n_identity=b if use_pag else 0, control=samples).float().to(x.device)
        parts = list(out.chunk(n_chunks))  # [uncond,] cond[, perturbed cond]
        v_u = parts.pop(0) if use_cfg else None
        v_c = parts[0]
        v = v_c if v_u is None else v_u + cfg * (v_c - v_u)
        if use_pag:
            v_p = parts[1]
            v = pag_guide(v, v_c, v_p, pag_scale_at(pag_scale, pag_adaptive_scale, float(t.flatten()[0])))
        return v

    return model_fn
