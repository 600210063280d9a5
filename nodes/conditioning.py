"""ComfyUI's CONDITIONING, ``[[embeddings (B, L, C), {"attention_mask": (B, L), …}], …]``, as the core's TextCond
entries. Each entry keeps its own mask and its ``strength``."""

from __future__ import annotations

import torch

from ..sana_core.errors import SanaError
from ..sana_core.guidance import TextCond

# Entry keys only ComfyUI's own sampling applies (regional prompts, timestep ranges, ControlNet, hooks).
HOST_ONLY = ("area", "mask", "timestep_start", "timestep_end", "control", "gligen", "hooks")


def entry(emb: torch.Tensor, extra: dict) -> TextCond:
    mask = extra.get("attention_mask")
    if mask is None:
        mask = torch.ones(emb.shape[:2], dtype=torch.int64)
    if mask.ndim == 1:
        mask = mask[None]
    return TextCond(emb, mask, float(extra.get("strength", 1.0)))


def side(conditioning, what: str, sampler: str = "") -> list[TextCond]:
    """Every entry of one side. ``sampler`` names the pack's own sampler when it is the one that will run: then an
    entry that needs ComfyUI's sampling (an area, a mask, a timestep range, a ControlNet) is refused by name."""
    if not conditioning:
        raise SanaError(f"{what} conditioning is empty")
    out = []
    for i, (emb, extra) in enumerate(conditioning):
        host_only = [k for k in HOST_ONLY if extra.get(k) is not None]
        if sampler and host_only:
            raise SanaError(f"{what} conditioning entry {i} uses {host_only}, which {sampler} does not apply; run "
                            "inside ComfyUI with a flow model (Sana Sample then rides ComfyUI's sampling)")
        out.append(entry(emb, extra))
    return out
