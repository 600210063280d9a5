"""ComfyUI's CONDITIONING, ``[[embeddings (B, L, C), {"attention_mask": (B, L), …}], …]``, as the core's TextCond
entries, for the checks on the host's path and for Sana-Sprint, which samples with the core's own sampler."""

from __future__ import annotations

import torch

from ..sana_core.errors import SanaError
from ..sana_core.guidance import TextCond

# Entry keys only ComfyUI's own sampling applies (regional prompts, timestep ranges, ControlNet, hooks, strength).
HOST_ONLY = ("area", "mask", "timestep_start", "timestep_end", "control", "gligen", "hooks")


def entry(emb: torch.Tensor, extra: dict) -> TextCond:
    mask = extra.get("attention_mask")
    if mask is None:
        mask = torch.ones(emb.shape[:2], dtype=torch.int64)
    if mask.ndim == 1:
        mask = mask[None]
    return TextCond(emb, mask)


def side(conditioning, what: str) -> list[TextCond]:
    """Every entry of one side (``what``: 'positive' | 'negative')."""
    if not conditioning:
        raise SanaError(f"{what} conditioning is empty")
    return [entry(emb, extra) for emb, extra in conditioning]


def single(conditioning, what: str, sampler: str) -> TextCond:
    """The one plain entry of a side, for ``sampler`` (the core's own sampler): several entries, or one that needs
    ComfyUI's sampling (an area, a mask, a timestep range, a ControlNet), are refused by name."""
    entries = side(conditioning, what)
    if len(entries) > 1:
        raise SanaError(f"{what} conditioning has {len(entries)} entries (e.g. from Conditioning Combine); {sampler} "
                        "takes one prompt per side")
    host_only = [k for k in HOST_ONLY if conditioning[0][1].get(k) is not None]
    if host_only or conditioning[0][1].get("strength", 1.0) != 1.0:
        raise SanaError(f"{what} conditioning uses {host_only or ['strength']}, which {sampler} does not apply; "
                        "those need ComfyUI's sampling, which Sana Sample takes with a flow model")
    return entries[0]


def with_values(conditioning, values: dict) -> list:
    """A copy of ``conditioning`` with ``values`` set on every entry (the input is not changed)."""
    return [[emb, {**extra, **values}] for emb, extra in conditioning]
